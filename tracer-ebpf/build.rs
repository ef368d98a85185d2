use which::which;

/// Rebuild when the bpf-linker binary changes (aya-template's imperfect cache key).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // Let LLVM expand small memset/memcpy into stores. With its in-order memcpy mode on (the
    // linker's default) every memset, down to the zero padding of a struct, becomes a call to
    // a byte-at-a-time loop: ~19 calls in the state program, several per connection.
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
}
