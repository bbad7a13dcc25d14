//! The `weir` binary: a thin wrapper over `weir_server::main`.
//! See `weir --help`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    weir_server::main()
}
