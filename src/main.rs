//! The `fogvault` command line. Exit codes: 0 ok, 1 failure, 2 bad usage.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::args::Cli;

/// Keep the daemon's memory bounded: chunk-sized buffers come from mmap and go
/// back to the OS when freed (glibc's adaptive threshold would otherwise move
/// them onto heaps that never shrink), and few per-thread arenas.
fn tune_allocator() {
    // SAFETY: mallopt only changes glibc allocator parameters; it is called
    // first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// CPU features this binary was compiled to use (it is built for the build
/// machine's CPU, `.cargo/config.toml`) that the running CPU lacks: a binary
/// copied to an older machine stops here with a message, not a SIGILL later.
fn missing_cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut missing = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! need {
            ($($f:tt),*) => {$(
                if cfg!(target_feature = $f) && !std::arch::is_x86_feature_detected!($f) {
                    missing.push($f);
                }
            )*};
        }
        need!(
            "sse4.2",
            "popcnt",
            "avx",
            "avx2",
            "fma",
            "bmi1",
            "bmi2",
            "lzcnt",
            "movbe",
            "aes",
            "pclmulqdq",
            "sha",
            "adx",
            "avx512f",
            "avx512cd",
            "avx512bw",
            "avx512dq",
            "avx512vl",
            "avx512vbmi",
            "avx512ifma",
            "avx512vnni",
            "avx512bitalg",
            "avx512vpopcntdq",
            "vaes",
            "vpclmulqdq",
            "gfni"
        );
    }
    missing
}

fn main() -> ExitCode {
    let missing = missing_cpu_features();
    if !missing.is_empty() {
        eprintln!(
            "fogvault: error: this binary was built for a CPU with {}, which this machine lacks; \
             build it here (cargo build --release) or build a portable one \
             (RUSTFLAGS=\"--cfg chacha20_avx512\" cargo build --release)",
            missing.join(", ")
        );
        return ExitCode::from(1);
    }
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FOGVAULT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse(); // exits 2 on bad usage
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fogvault: error: {e}");
            ExitCode::from(1)
        }
    }
}
