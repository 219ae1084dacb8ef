//! Pure: the query templates of bindings, in the subset of Go's `text/template` that the Go
//! connector's templates use.
//!
//! A template is text with actions in `{{ }}` (`{{-` and `-}}` trim the white space next to
//! them, `{{/* */}}` is a comment): a pipeline to print (`.TableName`,
//! `quoteTableName .SchemaName .TableName`, `add $i 1`, `.X | quoteIdentifier`), `if` /
//! `else if` / `else` / `end`, and `range` (`range $i, $k := .CursorFields`) with an
//! optional `else`. The functions are Go's builtins `eq ne lt le gt ge and or not len
//! index` and the connector's `add`, `quoteIdentifier` and `quoteTableName`.
//!
//! Why this is safe to render: the data a template sees is fixed (`IsFirstQuery`,
//! `CursorFields` (already quoted identifiers), `SchemaName`, `TableName`), cursor values are
//! never part of it (the query reads them as `$1`, `$2`, ... parameters), and rendering has
//! no loops but `range` over that data, so it always ends. Mistakes are errors with the line
//! they are on, found when the binding is validated: unknown functions and fields, unclosed
//! blocks, wrong argument counts, comparisons of different kinds. (Printing `.TableName`
//! bare prints it as it is, as in Go; the built-in queries always quote.)

use std::collections::BTreeMap;
use std::fmt;

mod lex;

use lex::{split, tokenize, Piece, Token};

/// A template error, with the 1-based line of the action at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn error<T>(line: usize, message: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError { line, message: message.into() })
}

/// A value while rendering.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Value>),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Int(n) => *n != 0,
            Value::Str(s) => !s.is_empty(),
            Value::List(items) => !items.is_empty(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Str(_) => "string",
            Value::List(_) => "list",
        }
    }

    fn print(&self, out: &mut String) {
        match self {
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(n) => out.push_str(&n.to_string()),
            Value::Str(s) => out.push_str(s),
            Value::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    item.print(out);
                }
                out.push(']');
            }
        }
    }
}

/// The fields a template can read (`.Name`).
pub type Data = BTreeMap<String, Value>;

#[derive(Debug, Clone)]
enum Operand {
    /// `.` or `.A.B` (empty path: dot itself); `root` for `$.A`.
    Field {
        root: bool,
        path: Vec<String>,
    },
    Variable(String),
    Literal(Value),
    Pipeline(Box<Pipeline>),
    /// A function name in argument position (only valid as a command's head).
    Function(String),
}

#[derive(Debug, Clone)]
struct Command {
    head: Operand,
    args: Vec<Operand>,
}

#[derive(Debug, Clone)]
struct Pipeline {
    line: usize,
    commands: Vec<Command>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Print(Pipeline),
    If { branches: Vec<(Pipeline, Vec<Node>)>, otherwise: Vec<Node> },
    Range { index: Option<String>, element: Option<String>, over: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
}

const FUNCTIONS: &[&str] = &[
    "add",
    "quoteIdentifier",
    "quoteTableName",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
    "len",
    "index",
];

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

struct PipelineParser<'a> {
    line: usize,
    tokens: &'a [Token],
    at: usize,
}

impl PipelineParser<'_> {
    fn pipeline(&mut self) -> Result<Pipeline, TemplateError> {
        let mut commands = vec![self.command()?];
        while self.tokens.get(self.at) == Some(&Token::Pipe) {
            self.at += 1;
            commands.push(self.command()?);
        }
        Ok(Pipeline { line: self.line, commands })
    }

    fn command(&mut self) -> Result<Command, TemplateError> {
        let mut operands = Vec::new();
        while let Some(token) = self.tokens.get(self.at) {
            if matches!(token, Token::Pipe | Token::Close) {
                break;
            }
            operands.push(self.operand()?);
        }
        if operands.is_empty() {
            return error(self.line, "missing value in a pipeline");
        }
        let head = operands.remove(0);
        if !operands.is_empty() && !matches!(head, Operand::Function(_)) {
            return error(self.line, "a value cannot take arguments: only functions can");
        }
        for arg in &operands {
            if let Operand::Function(name) = arg {
                return error(
                    self.line,
                    format!("function {name:?} used as an argument: wrap the call in parentheses"),
                );
            }
        }
        Ok(Command { head, args: operands })
    }

    fn operand(&mut self) -> Result<Operand, TemplateError> {
        let token = self.tokens[self.at].clone();
        self.at += 1;
        Ok(match token {
            Token::Dot(path) => Operand::Field { root: false, path },
            Token::DollarDot(path) => Operand::Field { root: true, path },
            Token::Var(name) => Operand::Variable(name),
            Token::Int(n) => Operand::Literal(Value::Int(n)),
            Token::Str(s) => Operand::Literal(Value::Str(s)),
            Token::Ident(name) if name == "true" || name == "false" => Operand::Literal(Value::Bool(name == "true")),
            Token::Ident(name) if FUNCTIONS.contains(&name.as_str()) => Operand::Function(name),
            Token::Ident(name) => return error(self.line, format!("function {name:?} not defined")),
            Token::Open => {
                let inner = self.pipeline()?;
                if self.tokens.get(self.at) != Some(&Token::Close) {
                    return error(self.line, "unclosed parenthesis");
                }
                self.at += 1;
                Operand::Pipeline(Box::new(inner))
            }
            other => return error(self.line, format!("unexpected {other:?} in a pipeline")),
        })
    }
}

fn parse_pipeline(line: usize, tokens: &[Token]) -> Result<Pipeline, TemplateError> {
    let mut parser = PipelineParser { line, tokens, at: 0 };
    let pipeline = parser.pipeline()?;
    if parser.at != tokens.len() {
        return error(line, "unexpected text after a pipeline (an unopened parenthesis?)");
    }
    Ok(pipeline)
}

/// What ended a block of nodes.
enum BlockEnd {
    Eof,
    End,
    Else(Option<Pipeline>),
}

struct Parser {
    pieces: std::vec::IntoIter<Piece>,
}

impl Parser {
    fn block(&mut self) -> Result<(Vec<Node>, BlockEnd, usize), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            let (line, body) = match piece {
                Piece::Text(text) => {
                    if !text.is_empty() {
                        nodes.push(Node::Text(text));
                    }
                    continue;
                }
                Piece::Action { line, body } => (line, body),
            };
            let tokens = tokenize(line, &body)?;
            match tokens.first() {
                None => return error(line, "empty action"),
                Some(Token::Ident(k)) if k == "end" => {
                    if tokens.len() > 1 {
                        return error(line, "unexpected text after \"end\"");
                    }
                    return Ok((nodes, BlockEnd::End, line));
                }
                Some(Token::Ident(k)) if k == "else" => {
                    let condition = match tokens.get(1) {
                        None => None,
                        Some(Token::Ident(k)) if k == "if" => Some(parse_pipeline(line, &tokens[2..])?),
                        Some(_) => return error(line, "\"else\" may only be followed by \"if\""),
                    };
                    return Ok((nodes, BlockEnd::Else(condition), line));
                }
                Some(Token::Ident(k)) if k == "if" => nodes.push(self.if_block(line, &tokens[1..])?),
                Some(Token::Ident(k)) if k == "range" => nodes.push(self.range_block(line, &tokens[1..])?),
                Some(Token::Ident(k))
                    if ["with", "define", "template", "block", "break", "continue"].contains(&k.as_str()) =>
                {
                    return error(line, format!("\"{k}\" is not supported in query templates"));
                }
                Some(Token::Var(_)) if tokens.get(1) == Some(&Token::Declare) => {
                    return error(line, "variable declarations are only supported in \"range\"");
                }
                Some(_) => nodes.push(Node::Print(parse_pipeline(line, &tokens)?)),
            }
        }
        Ok((nodes, BlockEnd::Eof, 0))
    }

    fn if_block(&mut self, line: usize, condition: &[Token]) -> Result<Node, TemplateError> {
        let mut branches = Vec::new();
        let mut condition = parse_pipeline(line, condition)?;
        loop {
            let (nodes, end, end_line) = self.block()?;
            match end {
                BlockEnd::Eof => return error(line, "\"if\" without a matching \"end\""),
                BlockEnd::End => {
                    branches.push((condition, nodes));
                    return Ok(Node::If { branches, otherwise: Vec::new() });
                }
                BlockEnd::Else(Some(next)) => {
                    branches.push((condition, nodes));
                    condition = next;
                }
                BlockEnd::Else(None) => {
                    branches.push((condition, nodes));
                    let (otherwise, end, _) = self.block()?;
                    return match end {
                        BlockEnd::End => Ok(Node::If { branches, otherwise }),
                        BlockEnd::Else(_) => error(end_line, "more than one \"else\" in an \"if\""),
                        BlockEnd::Eof => error(line, "\"if\" without a matching \"end\""),
                    };
                }
            }
        }
    }

    fn range_block(&mut self, line: usize, tokens: &[Token]) -> Result<Node, TemplateError> {
        let (index, element, rest) = match tokens {
            [Token::Var(i), Token::Comma, Token::Var(e), Token::Declare, rest @ ..] => {
                (Some(i.clone()), Some(e.clone()), rest)
            }
            [Token::Var(e), Token::Declare, rest @ ..] => (None, Some(e.clone()), rest),
            _ => (None, None, tokens),
        };
        let over = parse_pipeline(line, rest)?;
        let (body, end, end_line) = self.block()?;
        let otherwise = match end {
            BlockEnd::End => Vec::new(),
            BlockEnd::Else(None) => {
                let (otherwise, end, _) = self.block()?;
                if !matches!(end, BlockEnd::End) {
                    return error(line, "\"range\" without a matching \"end\"");
                }
                otherwise
            }
            BlockEnd::Else(Some(_)) => return error(end_line, "\"else if\" cannot follow \"range\""),
            BlockEnd::Eof => return error(line, "\"range\" without a matching \"end\""),
        };
        Ok(Node::Range { index, element, over, body, otherwise })
    }
}

/// Variables in scope and the current dot.
struct Scope<'d> {
    root: &'d Data,
    variables: Vec<(String, Value)>,
}

impl Template {
    /// Parse a template; every syntax error, unknown function and unbalanced block is found here.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parser = Parser { pieces: split(source)?.into_iter() };
        let (nodes, end, line) = parser.block()?;
        match end {
            BlockEnd::Eof => Ok(Template { nodes }),
            BlockEnd::End => error(line, "unexpected \"end\""),
            BlockEnd::Else(_) => error(line, "unexpected \"else\""),
        }
    }

    /// Render with `data` as dot.
    pub fn render(&self, data: &Data) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut scope = Scope { root: data, variables: Vec::new() };
        render_nodes(&self.nodes, None, &mut scope, &mut out)?;
        Ok(out)
    }
}

fn render_nodes(
    nodes: &[Node],
    dot: Option<&Value>,
    scope: &mut Scope<'_>,
    out: &mut String,
) -> Result<(), TemplateError> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Print(pipeline) => eval_pipeline(pipeline, dot, scope)?.print(out),
            Node::If { branches, otherwise } => {
                let mut taken = false;
                for (condition, body) in branches {
                    if eval_pipeline(condition, dot, scope)?.truthy() {
                        render_nodes(body, dot, scope, out)?;
                        taken = true;
                        break;
                    }
                }
                if !taken {
                    render_nodes(otherwise, dot, scope, out)?;
                }
            }
            Node::Range { index, element, over, body, otherwise } => {
                let items = match eval_pipeline(over, dot, scope)? {
                    Value::List(items) => items,
                    other => return error(over.line, format!("range over a {}, not a list", other.kind())),
                };
                if items.is_empty() {
                    render_nodes(otherwise, dot, scope, out)?;
                }
                for (i, item) in items.iter().enumerate() {
                    let depth = scope.variables.len();
                    if let Some(name) = index {
                        scope.variables.push((name.clone(), Value::Int(i as i64)));
                    }
                    if let Some(name) = element {
                        scope.variables.push((name.clone(), item.clone()));
                    }
                    let result = render_nodes(body, Some(item), scope, out);
                    scope.variables.truncate(depth);
                    result?;
                }
            }
        }
    }
    Ok(())
}

fn eval_pipeline(pipeline: &Pipeline, dot: Option<&Value>, scope: &Scope<'_>) -> Result<Value, TemplateError> {
    let mut previous: Option<Value> = None;
    for command in &pipeline.commands {
        let mut args = Vec::with_capacity(command.args.len() + 1);
        for arg in &command.args {
            args.push(eval_operand(pipeline.line, arg, dot, scope)?);
        }
        previous = Some(match &command.head {
            Operand::Function(name) => {
                if let Some(piped) = previous.take() {
                    args.push(piped);
                }
                call(pipeline.line, name, args)?
            }
            operand => {
                if previous.is_some() {
                    return error(pipeline.line, "only a function can follow \"|\"");
                }
                eval_operand(pipeline.line, operand, dot, scope)?
            }
        });
    }
    previous.map_or_else(|| error(pipeline.line, "empty pipeline"), Ok)
}

fn eval_operand(
    line: usize,
    operand: &Operand,
    dot: Option<&Value>,
    scope: &Scope<'_>,
) -> Result<Value, TemplateError> {
    match operand {
        Operand::Literal(value) => Ok(value.clone()),
        Operand::Pipeline(inner) => eval_pipeline(inner, dot, scope),
        Operand::Function(name) => call(line, name, Vec::new()),
        Operand::Variable(name) => {
            if name == "$" {
                return error(line, "\"$\" alone is the whole data: use a field such as $.TableName");
            }
            scope
                .variables
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .map_or_else(|| error(line, format!("undefined variable {name}")), Ok)
        }
        Operand::Field { root, path } => {
            if path.is_empty() {
                return match (root, dot) {
                    (false, Some(value)) => Ok(value.clone()),
                    _ => error(line, "\".\" is the whole data here: use a field such as .TableName"),
                };
            }
            if !root {
                if let Some(value) = dot {
                    return error(
                        line,
                        format!(
                            "field .{} of a {} (inside range, use $.{} for the template's data)",
                            path[0],
                            value.kind(),
                            path[0]
                        ),
                    );
                }
            }
            if path.len() > 1 {
                return error(line, format!("field .{} has no fields", path[0]));
            }
            scope.root.get(&path[0]).cloned().map_or_else(
                || {
                    let known: Vec<String> = scope.root.keys().map(|k| format!(".{k}")).collect();
                    error(line, format!("unknown field .{} (the template can use {})", path[0], known.join(", ")))
                },
                Ok,
            )
        }
    }
}

fn call(line: usize, name: &str, args: Vec<Value>) -> Result<Value, TemplateError> {
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            error(line, format!("{name} takes {n} argument{}, got {}", if n == 1 { "" } else { "s" }, args.len()))
        }
    };
    let text = |value: &Value| match value {
        Value::Str(s) => Ok(s.clone()),
        other => error(line, format!("{name} needs strings, got a {}", other.kind())),
    };
    let int = |value: &Value| match value {
        Value::Int(n) => Ok(*n),
        other => error(line, format!("{name} needs integers, got a {}", other.kind())),
    };
    match name {
        "add" => {
            arity(2)?;
            int(&args[0])?.checked_add(int(&args[1])?).map(Value::Int).map_or_else(|| error(line, "add overflows"), Ok)
        }
        "quoteIdentifier" => {
            arity(1)?;
            Ok(Value::Str(crate::pg::quote_identifier(&text(&args[0])?)))
        }
        "quoteTableName" => {
            arity(2)?;
            let (schema, table) = (text(&args[0])?, text(&args[1])?);
            Ok(Value::Str(format!("{}.{}", crate::pg::quote_identifier(&schema), crate::pg::quote_identifier(&table))))
        }
        "not" => {
            arity(1)?;
            Ok(Value::Bool(!args[0].truthy()))
        }
        "and" | "or" => {
            if args.is_empty() {
                return error(line, format!("{name} takes at least 1 argument"));
            }
            // Like Go: the first falsy (and) or truthy (or) argument, else the last.
            let want = name == "or";
            let last = args.len() - 1;
            Ok(args.iter().position(|a| a.truthy() == want).map_or(args[last].clone(), |i| args[i].clone()))
        }
        "len" => {
            arity(1)?;
            match &args[0] {
                Value::List(items) => Ok(Value::Int(items.len() as i64)),
                Value::Str(s) => Ok(Value::Int(s.len() as i64)),
                other => error(line, format!("len of a {}", other.kind())),
            }
        }
        "index" => {
            arity(2)?;
            let Value::List(items) = &args[0] else { return error(line, "index needs a list") };
            let i = int(&args[1])?;
            usize::try_from(i)
                .ok()
                .and_then(|i| items.get(i))
                .cloned()
                .map_or_else(|| error(line, format!("index {i} out of range (the list has {})", items.len())), Ok)
        }
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
            if name == "eq" && args.len() >= 2 {
                let first = &args[0];
                for other in &args[1..] {
                    if compare(line, first, other)? == std::cmp::Ordering::Equal {
                        return Ok(Value::Bool(true));
                    }
                }
                return Ok(Value::Bool(false));
            }
            arity(2)?;
            let order = compare(line, &args[0], &args[1])?;
            use std::cmp::Ordering::*;
            Ok(Value::Bool(match name {
                "ne" => order != Equal,
                "lt" => order == Less,
                "le" => order != Greater,
                "gt" => order == Greater,
                _ => order != Less,
            }))
        }
        _ => error(line, format!("function {name:?} not defined")),
    }
}

fn compare(line: usize, a: &Value, b: &Value) -> Result<std::cmp::Ordering, TemplateError> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        _ => error(line, format!("incompatible types for comparison: {} and {}", a.kind(), b.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Go connector's data for a binding: quoted cursor names, and the table.
    fn data(first: bool, cursor: &[&str]) -> Data {
        let mut data = Data::new();
        data.insert("IsFirstQuery".into(), Value::Bool(first));
        data.insert(
            "CursorFields".into(),
            Value::List(cursor.iter().map(|c| Value::Str(crate::pg::quote_identifier(c))).collect()),
        );
        data.insert("SchemaName".into(), Value::Str("my schema".into()));
        data.insert("TableName".into(), Value::Str("Ta\"ble".into()));
        data
    }

    /// A multi-column cursor template in the style of the Go connector's built-in one.
    const CURSOR_TEMPLATE: &str = r#"{{if .CursorFields -}}
  {{- if .IsFirstQuery -}}
    SELECT * FROM {{quoteTableName .SchemaName .TableName}}
  {{- else -}}
    SELECT * FROM {{quoteTableName .SchemaName .TableName}}
    {{- range $i, $k := $.CursorFields -}}
      {{- if eq $i 0}} WHERE ({{else}}) OR ({{end -}}
      {{- range $j, $n := $.CursorFields -}}
        {{- if lt $j $i -}} {{$n}} = ${{add $j 1}} AND {{end -}}
      {{- end -}}
      {{$k}} > ${{add $i 1}}
    {{- end -}}
    )
  {{- end}} ORDER BY {{range $i, $k := $.CursorFields}}{{if gt $i 0}}, {{end}}{{$k}}{{end -}};
{{- else -}}
  SELECT * FROM {{quoteTableName .SchemaName .TableName}};
{{- end}}"#;

    #[test]
    fn go_style_templates_render_with_trimming_ranges_and_functions() {
        let template = Template::parse(CURSOR_TEMPLATE).unwrap();
        assert_eq!(template.render(&data(true, &[])).unwrap(), r#"SELECT * FROM "my schema"."Ta""ble";"#);
        assert_eq!(
            template.render(&data(true, &["a", "b"])).unwrap(),
            r#"SELECT * FROM "my schema"."Ta""ble" ORDER BY "a", "b";"#
        );
        assert_eq!(
            template.render(&data(false, &["a", "b"])).unwrap(),
            r#"SELECT * FROM "my schema"."Ta""ble" WHERE ("a" > $1) OR ("a" = $1 AND "b" > $2) ORDER BY "a", "b";"#
        );
        let piped = Template::parse(
            "{{/* c */}}x{{ .TableName | quoteIdentifier }}{{ len .CursorFields }}{{ index .CursorFields 0 }}",
        )
        .unwrap();
        assert_eq!(piped.render(&data(false, &["c"])).unwrap(), r#"x"Ta""ble"1"c""#);
        let branches =
            Template::parse("{{if not .IsFirstQuery}}a{{else if eq .TableName \"x\" \"Ta\\\"ble\"}}b{{else}}c{{end}}")
                .unwrap();
        assert_eq!(branches.render(&data(true, &[])).unwrap(), "b");
        let empty = Template::parse("{{range .CursorFields}}{{.}}{{else}}none{{end}}").unwrap();
        assert_eq!(empty.render(&data(true, &[])).unwrap(), "none");
    }

    #[test]
    fn bad_templates_are_errors_with_their_line() {
        let parse_error = |source: &str| Template::parse(source).unwrap_err().to_string();
        assert_eq!(parse_error("SELECT\n{{ frobnicate .TableName }}"), "line 2: function \"frobnicate\" not defined");
        assert!(parse_error("{{if .IsFirstQuery}}x").contains("without a matching \"end\""));
        assert!(parse_error("x{{end}}").contains("unexpected \"end\""));
        assert!(parse_error("{{ .TableName ").contains("unclosed action"));
        assert!(parse_error("{{ (add 1 2 }}").contains("parenthesis"));
        assert!(parse_error("{{ with .X }}{{end}}").contains("not supported"));
        let render_error =
            |source: &str| Template::parse(source).unwrap().render(&data(true, &["a"])).unwrap_err().to_string();
        assert!(render_error("{{ .Tablename }}").contains("unknown field .Tablename"));
        assert!(render_error("{{ add .TableName 1 }}").contains("integers"));
        assert!(render_error("{{ eq .IsFirstQuery 1 }}").contains("incompatible types"));
        assert!(render_error("{{ quoteTableName .TableName }}").contains("takes 2 arguments"));
        assert!(render_error("{{range .CursorFields}}{{.TableName}}{{end}}").contains("use $.TableName"));
    }
}
