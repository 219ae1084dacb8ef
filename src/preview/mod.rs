//! The local runner: drive the connector from a catalog YAML file as the Flow runtime would.
//!
//! `source-postgres preview --source flow.yaml` reads a Flow catalog with a `captures:`
//! section and runs each RPC against a fresh connector process, as the runtime does
//! (internal `spec` first, then the real request): `discover` (for the collections' schemas
//! and keys), `validate`, `apply`, then a capture session with `open`. Every checkpoint is
//! committed like a runtime transaction: documents since the previous checkpoint are
//! combined per collection key with the reductions their schemas declare (so `_meta.op = d`
//! deletes a key, and merge fills unchanged TOAST columns), printed as
//! `["collection", document]` lines, the state patch is merged into the state file, and the
//! checkpoint is acknowledged. A later run with the same state file resumes the capture.
//!
//! The transcript tests use this same engine, so what users run locally is what is tested.

mod reduce;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use source_postgres::capture::state::{encode_state_key, merge_patch};

/// Arguments of `source-postgres preview`.
#[derive(Debug, Clone, clap::Args)]
pub struct PreviewArgs {
    /// Catalog YAML (or JSON) file with a `captures:` section.
    #[arg(long)]
    pub source: PathBuf,
    /// Which capture of the catalog to run (default: the only one).
    #[arg(long)]
    pub name: Option<String>,
    /// File holding the connector state; read at start, rewritten at every checkpoint.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Stop once backfills are done and the stream has caught up.
    #[arg(long)]
    pub until_idle: bool,
    /// Stop after this many seconds (the capture is interrupted, not failed).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Also print `["connectorState", {...}]` lines with each checkpoint's state patch.
    #[arg(long)]
    pub output_state: bool,
    /// Also print `["sourcedSchema", {"collection": ..., "documentSchema": ...}]` lines: the
    /// connector's sourced schemas, each at the checkpoint that commits it.
    #[arg(long)]
    pub output_schemas: bool,
    /// Print each key's final document once at the end instead of each transaction's.
    #[arg(long)]
    pub final_only: bool,
    /// The connector command (default: the catalog's `local.command`, else this binary).
    #[arg(long, num_args = 1.., allow_hyphen_values = false)]
    pub connector: Option<Vec<String>>,
}

/// A binding of the capture being previewed.
struct PreviewBinding {
    resource: Value,
    collection: String,
    key: Vec<String>,
    schema: Value,
    backfill: u32,
    resource_path: Vec<String>,
}

/// The capture definition read from the catalog.
struct CaptureDefinition {
    name: String,
    command: Vec<String>,
    env: BTreeMap<String, String>,
    config: Value,
    bindings: Vec<Value>,
}

fn load_document(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        return serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()));
    }
    serde_saphyr::from_str::<Value>(&text).map_err(|err| anyhow!("{} is not valid YAML: {err}", path.display()))
}

fn read_capture(args: &PreviewArgs) -> anyhow::Result<CaptureDefinition> {
    let catalog = load_document(&args.source)?;
    let captures = catalog
        .get("captures")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("{} has no `captures:` section", args.source.display()))?;
    let (name, capture) = match &args.name {
        Some(name) => (
            name.clone(),
            captures.get(name).ok_or_else(|| anyhow!("capture {name:?} is not in {}", args.source.display()))?,
        ),
        None if captures.len() == 1 => {
            captures.iter().next().map(|(k, v)| (k.clone(), v)).ok_or_else(|| anyhow!("no capture"))?
        }
        None => bail!("{} has {} captures: choose one with --name", args.source.display(), captures.len()),
    };
    let endpoint = capture.get("endpoint").ok_or_else(|| anyhow!("capture {name:?} has no endpoint"))?;
    let (config, command, env) = if let Some(local) = endpoint.get("local") {
        let command: Vec<String> = serde_json::from_value(local.get("command").cloned().unwrap_or(json!([])))
            .context("endpoint.local.command must be a list of strings")?;
        let env: BTreeMap<String, String> = serde_json::from_value(local.get("env").cloned().unwrap_or(json!({})))
            .context("endpoint.local.env must map strings to strings")?;
        (local.get("config").cloned().unwrap_or(json!({})), command, env)
    } else if let Some(connector) = endpoint.get("connector") {
        (connector.get("config").cloned().unwrap_or(json!({})), Vec::new(), BTreeMap::new())
    } else {
        bail!("capture {name:?} endpoint must be `local` or `connector`");
    };
    // A config given as a file name is relative to the catalog.
    let config = match config {
        Value::String(file) => {
            let base = args.source.parent().unwrap_or(Path::new("."));
            load_document(&base.join(file))?
        }
        other => other,
    };
    let command = match &args.connector {
        Some(command) => command.clone(),
        None if !command.is_empty() => command,
        None => vec![std::env::current_exe()?.to_string_lossy().into_owned()],
    };
    let bindings = capture.get("bindings").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(CaptureDefinition { name, command, env, config, bindings })
}

/// One connector process speaking the protocol over pipes.
struct Connector {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Connector {
    fn start(definition: &CaptureDefinition, extra_env: &[(&str, &str)]) -> anyhow::Result<Connector> {
        let (program, arguments) =
            definition.command.split_first().ok_or_else(|| anyhow!("the connector command is empty"))?;
        let mut command = Command::new(program);
        command
            .args(arguments)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in &definition.env {
            command.env(key, value);
        }
        for (key, value) in extra_env {
            command.env(key, value);
        }
        if progress_bar_wanted() {
            command.stderr(Stdio::piped());
        }
        let mut child = command.spawn().with_context(|| format!("cannot start the connector {program:?}"))?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(relay_logs(stderr));
        }
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("connector stdout is missing"))?;
        Ok(Connector { child, stdin, stdout: BufReader::with_capacity(1 << 20, stdout).lines() })
    }

    async fn send(&mut self, request: &Value) -> anyhow::Result<()> {
        let Some(stdin) = self.stdin.as_mut() else { return Ok(()) };
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        stdin.write_all(&line).await.context("writing to the connector failed")?;
        stdin.flush().await?;
        Ok(())
    }

    /// The next response, or None when the connector closed its output.
    async fn receive(&mut self) -> anyhow::Result<Option<Value>> {
        match self.stdout.next_line().await? {
            None => Ok(None),
            Some(line) => {
                let value: Value = serde_json::from_str(&line)
                    .with_context(|| format!("connector wrote a line that is not JSON: {line:?}"))?;
                if !value.is_object() || value.as_object().is_some_and(|o| o.len() != 1) {
                    bail!("connector wrote something that is not a single response: {line:?}");
                }
                Ok(Some(value))
            }
        }
    }

    async fn expect(&mut self, variant: &str) -> anyhow::Result<Value> {
        match self.receive().await? {
            Some(mut response) if response.get(variant).is_some() => Ok(response[variant].take()),
            Some(other) => bail!("expected a {variant:?} response, got {other}"),
            None => {
                let status = self.child.wait().await?;
                bail!("the connector exited ({status}) before answering with {variant:?}: see its error above")
            }
        }
    }

    fn close_input(&mut self) {
        self.stdin = None;
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        self.close_input();
        let status = self.child.wait().await?;
        if !status.success() {
            bail!("the connector failed ({status}): see its error above");
        }
        Ok(())
    }
}

/// Whether to draw a progress bar: only when stderr is a terminal, so logs stay intact
/// when captured by a file or a test.
fn progress_bar_wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Forward the connector's log lines, drawing its backfill status lines as a progress bar.
async fn relay_logs(stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    let mut bar_shown = false;
    while let Ok(Some(line)) = lines.next_line().await {
        let status =
            serde_json::from_str::<Value>(&line).ok().filter(|v| v.pointer("/fields/rows_backfilled").is_some());
        let mut err = std::io::stderr().lock();
        match status {
            Some(status) => {
                let _ = write!(err, "\r\x1b[K{}", progress_bar(&status["fields"]));
                bar_shown = true;
            }
            None => {
                if bar_shown {
                    let _ = writeln!(err);
                    bar_shown = false;
                }
                let _ = writeln!(err, "{line}");
            }
        }
        let _ = err.flush();
    }
}

/// `[#########.........] 45%  12345 of ~27000 rows  4000 rows/s  1 of 2 tables left`
fn progress_bar(fields: &Value) -> String {
    let number = |name: &str| fields.get(name).and_then(Value::as_u64).unwrap_or(0);
    let (done, estimate) = (number("rows_backfilled"), number("rows_estimated").max(1));
    let fraction = (done as f64 / estimate as f64).min(1.0);
    let width = 30;
    let filled = (fraction * width as f64).round() as usize;
    format!(
        "[{}{}] {:>3}%  {} of ~{} rows  {} rows/s  {} of {} tables left",
        "#".repeat(filled),
        ".".repeat(width - filled),
        (fraction * 100.0).round() as u64,
        done,
        estimate,
        number("rows_per_second"),
        number("tables_backfilling"),
        number("tables_total"),
    )
}

/// One unary RPC in its own process: internal spec, then the request.
async fn unary(definition: &CaptureDefinition, request: Value, response: &str) -> anyhow::Result<Value> {
    let mut connector = Connector::start(definition, &[])?;
    connector.send(&json!({"spec": {"connectorType": "IMAGE", "config": {}}})).await?;
    connector.expect("spec").await?;
    connector.send(&request).await?;
    let answer = connector.expect(response).await?;
    connector.finish().await?;
    Ok(answer)
}

fn collection_prefix(capture: &str) -> String {
    match capture.rsplit_once('/') {
        Some((prefix, _)) => prefix.to_string(),
        None => capture.to_string(),
    }
}

/// Prints documents (the preview's own output, separate from the connector's protocol).
struct Printer {
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Printer {
    fn line(&mut self, label: &str, value: &Value) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, &json!([label, value]))?;
        self.out.write_all(b"\n")?;
        Ok(())
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

fn write_state(path: &Path, state: &Value) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// Run a preview.
pub async fn run(args: PreviewArgs) -> anyhow::Result<()> {
    let definition = read_capture(&args)?;
    let mut bindings = discover_bindings(&definition).await?;
    validate_bindings(&definition, &mut bindings).await?;
    let capture_spec = apply(&definition, &bindings).await?;
    let state = match &args.state_file {
        Some(path) if path.exists() => serde_json::from_slice(&std::fs::read(path)?)
            .with_context(|| format!("{} is not a JSON state", path.display()))?,
        _ => json!({}),
    };
    capture(&args, &definition, bindings, capture_spec, state).await
}

/// Discover, and pick the requested bindings (all discovered ones when the catalog lists
/// none) with their collections, keys and schemas.
async fn discover_bindings(definition: &CaptureDefinition) -> anyhow::Result<Vec<PreviewBinding>> {
    let discovered =
        unary(definition, json!({"discover": {"connectorType": "IMAGE", "config": definition.config}}), "discovered")
            .await?;
    let discovered: Vec<Value> = discovered.get("bindings").and_then(Value::as_array).cloned().unwrap_or_default();
    let prefix = collection_prefix(&definition.name);
    let requested: Vec<(Value, Option<String>, u32)> = if definition.bindings.is_empty() {
        discovered.iter().map(|d| (d["resourceConfig"].clone(), None, 0)).collect()
    } else {
        definition
            .bindings
            .iter()
            .filter(|b| !b.get("disable").and_then(Value::as_bool).unwrap_or(false))
            .map(|b| {
                let backfill =
                    b.get("backfill").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
                (
                    b.get("resource").cloned().unwrap_or(json!({})),
                    b.get("target").and_then(Value::as_str).map(str::to_string),
                    backfill,
                )
            })
            .collect()
    };
    let mut bindings = Vec::new();
    for (resource, target, backfill) in requested {
        let path = [resource.get("namespace"), resource.get("stream")]
            .map(|v| v.and_then(Value::as_str).unwrap_or("").to_string());
        let found = find_discovered(&discovered, &resource, &path)?;
        let collection =
            target.unwrap_or_else(|| format!("{prefix}/{}", found["recommendedName"].as_str().unwrap_or("")));
        let key: Vec<String> = serde_json::from_value(found["key"].clone()).unwrap_or_default();
        bindings.push(PreviewBinding {
            resource,
            collection,
            key,
            schema: found["documentSchema"].clone(),
            backfill,
            resource_path: path.to_vec(),
        });
    }
    Ok(bindings)
}

/// The discovered binding of a requested resource.
fn find_discovered<'d>(discovered: &'d [Value], resource: &Value, path: &[String; 2]) -> anyhow::Result<&'d Value> {
    // The batch connector's resources are named (`name`); the CDC connector's are tables
    // (`namespace`, `stream`).
    let name = resource.get("name").and_then(Value::as_str).filter(|_| resource.get("stream").is_none());
    discovered
        .iter()
        .find(|d| match name {
            Some(name) => d["resourceConfig"]["name"] == name,
            None => {
                d["resourceConfig"]["namespace"] == path[0].as_str()
                    && d["resourceConfig"]["stream"] == path[1].as_str()
            }
        })
        .ok_or_else(|| match name {
            Some(name) => anyhow!("resource {name:?} was not discovered: check its name and the user's privileges"),
            None => anyhow!(
                "table \"{}.{}\" was not discovered: check its name, the publication and the user's privileges",
                path[0],
                path[1]
            ),
        })
}

fn collection_spec(binding: &PreviewBinding) -> Value {
    json!({"name": binding.collection, "key": binding.key, "writeSchema": binding.schema})
}

/// Validate the bindings; the connector's resource paths replace the guessed ones.
async fn validate_bindings(definition: &CaptureDefinition, bindings: &mut [PreviewBinding]) -> anyhow::Result<()> {
    let validate_bindings: Vec<Value> = bindings
        .iter()
        .map(|b| json!({"resourceConfig": b.resource, "collection": collection_spec(b), "backfill": b.backfill}))
        .collect();
    let validated = unary(
        definition,
        json!({"validate": {"name": definition.name, "connectorType": "IMAGE", "config": definition.config, "bindings": validate_bindings}}),
        "validated",
    )
    .await?;
    let paths: Vec<Vec<String>> = validated
        .get("bindings")
        .and_then(Value::as_array)
        .map(|bs| bs.iter().map(|b| serde_json::from_value(b["resourcePath"].clone()).unwrap_or_default()).collect())
        .unwrap_or_default();
    if paths.len() != bindings.len() {
        bail!("the connector validated {} bindings, but {} were requested", paths.len(), bindings.len());
    }
    for (binding, path) in bindings.iter_mut().zip(paths) {
        binding.resource_path = path;
    }
    Ok(())
}

/// Apply the capture; its spec, as the `open` request carries it.
async fn apply(definition: &CaptureDefinition, bindings: &[PreviewBinding]) -> anyhow::Result<Value> {
    let capture_bindings: Vec<Value> = bindings
        .iter()
        .map(|b| {
            json!({
                "resourceConfig": b.resource,
                "resourcePath": b.resource_path,
                "collection": collection_spec(b),
                "backfill": b.backfill,
                "stateKey": encode_state_key(&b.resource_path, b.backfill),
            })
        })
        .collect();
    let capture_spec = json!({
        "name": definition.name,
        "connectorType": "IMAGE",
        "config": definition.config,
        "bindings": capture_bindings,
        "intervalSeconds": 300,
    });
    let applied =
        unary(definition, json!({"apply": {"capture": capture_spec, "version": "preview"}}), "applied").await?;
    if let Some(description) = applied.get("actionDescription").and_then(Value::as_str).filter(|d| !d.is_empty()) {
        tracing::info!(actions = description, "apply");
    }
    Ok(capture_spec)
}

/// Run the capture session: open, then commit each checkpoint's documents until the
/// connector ends, the input ends or the timeout is reached.
async fn capture(
    args: &PreviewArgs,
    definition: &CaptureDefinition,
    bindings: Vec<PreviewBinding>,
    capture_spec: Value,
    state: Value,
) -> anyhow::Result<()> {
    let mut env = Vec::new();
    if args.until_idle {
        env.push(("SHUTDOWN_AFTER_POLLING", "yes"));
    }
    let mut connector = Connector::start(definition, &env)?;
    connector.send(&json!({"spec": {"connectorType": "IMAGE", "config": {}}})).await?;
    connector.expect("spec").await?;
    connector
        .send(&json!({"open": {"capture": capture_spec, "version": "preview", "range": {"keyEnd": 4294967295u32, "rClockEnd": 4294967295u32}, "state": state}}))
        .await?;
    let opened = connector.expect("opened").await?;
    let explicit_acks = opened.get("explicitAcknowledgements").and_then(Value::as_bool).unwrap_or(false);

    let mut commits = Commits::new(args, bindings, state);
    let deadline = args.timeout.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    loop {
        let response = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, connector.receive()).await {
                Ok(response) => response?,
                Err(_) => {
                    tracing::info!("preview timeout reached: stopping the capture");
                    break;
                }
            },
            None => connector.receive().await?,
        };
        let Some(response) = response else { break };
        if let Some(captured) = response.get("captured") {
            commits.captured(captured)?;
        } else if let Some(checkpoint) = response.get("checkpoint") {
            commits.checkpoint(checkpoint)?;
            // A connector that ended after its final checkpoint no longer reads acknowledgements.
            if explicit_acks && connector.send(&json!({"acknowledge": {"checkpoints": 1}})).await.is_err() {
                connector.close_input();
            }
        } else if let Some(sourced) = response.get("sourcedSchema") {
            commits.sourced_schema(sourced)?;
        } else {
            bail!("unexpected response during the capture: {response}");
        }
    }
    commits.warn_uncommitted();
    connector.close_input();
    let status = connector.child.wait().await?;
    commits.print_final()?;
    // Closing the connector's input ends a session cleanly; anything else is its failure.
    if !status.success() && deadline.is_none() {
        bail!("the connector failed ({status}): see its error above");
    }
    Ok(())
}

/// Commits a session's documents like runtime transactions: combined per key until a
/// checkpoint, then printed, with the state patch merged into the state (and its file).
struct Commits<'a> {
    args: &'a PreviewArgs,
    bindings: Vec<PreviewBinding>,
    reducers: Vec<reduce::Reducer>,
    /// The documents since the last checkpoint, per binding and key.
    transaction: Vec<BTreeMap<String, Value>>,
    /// Every key's document so far (for `--final-only`).
    totals: Vec<BTreeMap<String, Value>>,
    printer: Printer,
    state: Value,
    open_documents: u64,
    /// Sourced schemas since the last checkpoint: (binding, schema).
    schemas: Vec<(usize, Value)>,
}

impl<'a> Commits<'a> {
    fn new(args: &'a PreviewArgs, bindings: Vec<PreviewBinding>, state: Value) -> Commits<'a> {
        let reducers: Vec<reduce::Reducer> = bindings.iter().map(|b| reduce::Reducer::new(&b.schema, &b.key)).collect();
        Commits {
            args,
            transaction: vec![BTreeMap::new(); bindings.len()],
            totals: vec![BTreeMap::new(); bindings.len()],
            bindings,
            reducers,
            printer: Printer { out: std::io::BufWriter::new(std::io::stdout()) },
            state,
            open_documents: 0,
            schemas: Vec::new(),
        }
    }

    fn binding_index(&self, binding: u64) -> anyhow::Result<usize> {
        usize::try_from(binding)
            .ok()
            .filter(|i| *i < self.bindings.len())
            .ok_or_else(|| anyhow!("a response for unknown binding {binding}"))
    }

    fn sourced_schema(&mut self, sourced: &Value) -> anyhow::Result<()> {
        let index = self.binding_index(sourced.get("binding").and_then(Value::as_u64).unwrap_or(0))?;
        let schema =
            sourced.get("documentSchema").cloned().ok_or_else(|| anyhow!("sourcedSchema without documentSchema"))?;
        self.schemas.push((index, schema));
        Ok(())
    }

    fn captured(&mut self, captured: &Value) -> anyhow::Result<()> {
        let binding = captured.get("binding").and_then(Value::as_u64).unwrap_or(0);
        let index = usize::try_from(binding)
            .ok()
            .filter(|i| *i < self.bindings.len())
            .ok_or_else(|| anyhow!("captured document for unknown binding {binding}"))?;
        let doc = captured.get("doc").cloned().ok_or_else(|| anyhow!("captured response without doc"))?;
        self.reducers[index].add(&mut self.transaction[index], doc)?;
        self.open_documents += 1;
        Ok(())
    }

    fn checkpoint(&mut self, checkpoint: &Value) -> anyhow::Result<()> {
        let updated =
            checkpoint.pointer("/state/updated").cloned().ok_or_else(|| anyhow!("checkpoint without state.updated"))?;
        let merge = checkpoint.pointer("/state/mergePatch").and_then(Value::as_bool).unwrap_or(false);
        if merge {
            merge_patch(&mut self.state, &updated);
        } else {
            self.state = updated.clone();
        }
        for (index, schema) in std::mem::take(&mut self.schemas) {
            if self.args.output_schemas {
                let collection = &self.bindings[index].collection;
                self.printer.line("sourcedSchema", &json!({"collection": collection, "documentSchema": schema}))?;
            }
        }
        for (index, documents) in self.transaction.iter_mut().enumerate() {
            for (key, doc) in std::mem::take(documents) {
                if !self.args.final_only {
                    self.printer.line(&self.bindings[index].collection, &doc)?;
                }
                self.reducers[index].combine_into(&mut self.totals[index], key, doc);
            }
        }
        if self.args.output_state {
            self.printer.line("connectorState", &json!({"updated": updated, "mergePatch": merge}))?;
        }
        self.printer.flush()?;
        if let Some(path) = &self.args.state_file {
            write_state(path, &self.state)?;
        }
        self.open_documents = 0;
        Ok(())
    }

    fn warn_uncommitted(&self) {
        if self.open_documents > 0 {
            tracing::warn!(documents = self.open_documents, "documents after the last checkpoint were not committed");
        }
    }

    /// With `--final-only`, each key's final document.
    fn print_final(&mut self) -> anyhow::Result<()> {
        if !self.args.final_only {
            return Ok(());
        }
        for (index, documents) in self.totals.iter().enumerate() {
            for doc in documents.values() {
                self.printer.line(&self.bindings[index].collection, doc)?;
            }
        }
        self.printer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bars_show_rows_rate_and_tables() {
        let bar = progress_bar(
            &json!({"rows_backfilled": 50, "rows_estimated": 200, "rows_per_second": 10, "tables_backfilling": 1, "tables_total": 3}),
        );
        assert_eq!(bar, "[########......................]  25%  50 of ~200 rows  10 rows/s  1 of 3 tables left");
    }
}
