//! The `weir` binary: a thin wrapper over `weir_server::main`.
//! See `weir --help`.

fn main() -> anyhow::Result<()> {
    weir_server::main()
}
