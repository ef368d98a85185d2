#![no_std]
// Exists so the library target builds on the host (clippy, tests).
