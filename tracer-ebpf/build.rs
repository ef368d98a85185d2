use which::which;

/// Rebuild when the bpf-linker binary changes (aya-template's imperfect cache key).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
