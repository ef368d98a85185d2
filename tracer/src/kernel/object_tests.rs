//! Checks on the eBPF object as built, which no test against the kernel would notice: its code
//! loads and counts right either way, only slower.

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind};

/// The compiler's memory builtins: on the bpf target they are byte-at-a-time loops.
const BUILTINS: [&str; 5] = ["memset", "memcpy", "memmove", "memcmp", "bcmp"];

/// Calls from program code to the builtins, as "section -> builtin".
fn builtin_calls(elf: &[u8]) -> Vec<String> {
    let file = object::File::parse(elf).expect("the embedded eBPF object is an ELF file");
    let mut calls = vec![];
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        for (_, rel) in section.relocations() {
            let RelocationTarget::Symbol(i) = rel.target() else {
                continue;
            };
            let name = file
                .symbol_by_index(i)
                .ok()
                .and_then(|s| s.name().ok().map(str::to_owned))
                .unwrap_or_default();
            if BUILTINS.contains(&name.as_str()) {
                calls.push(format!("{} -> {name}", section.name().unwrap_or("?")));
            }
        }
    }
    calls
}

#[test]
fn no_program_calls_a_byte_at_a_time_builtin() {
    // `tracer-ebpf/build.rs` passes `--disable-expand-memcpy-in-order` to the linker; without
    // it every zeroing (down to a struct's padding) becomes such a call, ~19 in the state
    // program alone.
    let calls = builtin_calls(super::OBJECT);
    assert!(calls.is_empty(), "calls to memory builtins: {calls:?}");
}

#[test]
fn the_check_sees_the_programs_code() {
    // The object has programs with relocations (maps), so an empty result above means
    // something: at least one program section holds relocations.
    let file = object::File::parse(super::OBJECT).unwrap();
    let relocated = file
        .sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .filter(|s| s.relocations().next().is_some())
        .count();
    assert!(
        relocated >= 5,
        "{relocated} program sections with relocations"
    );
}
