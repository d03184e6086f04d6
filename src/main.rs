//! The `livehub` binary: everything lives in the library; this only runs its CLI.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(livehub::cli::main());
}
