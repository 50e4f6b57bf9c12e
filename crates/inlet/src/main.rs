//! `inlet`: the one binary. Each subcommand wires the library crates for
//! one role; `main` stays short.

mod cli;
mod commands;
mod duration;

// mimalloc: the push path allocates per request (bodies, envelopes, JSON);
// glibc malloc showed up as ~11 % of the API's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
mod settings;

fn main() -> std::process::ExitCode {
    cli::main()
}
