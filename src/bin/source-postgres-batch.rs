//! The `source-postgres-batch` binary: the batch (polling) capture connector. All of it is
//! in the library's `batch` module; see its documentation.

fn main() -> std::process::ExitCode {
    source_postgres::batch::main()
}
