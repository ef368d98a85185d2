//! `tracer generate DIR` (hidden): the man pages (section 8: it lives in /usr/sbin) and shell
//! completions the Debian package ships, from the same clap definitions as the parser.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::{
    cli::Cli,
    error::{Error, Result},
};

pub fn run(dir: &Path) -> Result<i32> {
    let err = |what: &Path, e: std::io::Error| {
        Error::usage(format!(
            "cannot write {}: {e}: choose a writable DIR",
            what.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let cmd = Cli::command();
    let page = |cmd: clap::Command, name: &str| -> Result<()> {
        let path = dir.join(format!("{name}.8"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .section("8")
            .title(name.to_uppercase())
            .render(&mut buf)
            .map_err(|e| err(&path, e))?;
        std::fs::write(&path, buf).map_err(|e| err(&path, e))
    };
    page(cmd.clone(), "tracer")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names are &'static str (no "string" feature): leaked once, in a one-shot command.
        let name: &'static str = format!("tracer-{}", sub.get_name()).leak();
        page(sub.clone().name(name), name)?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut c = Cli::command();
        clap_complete::generate_to(shell, &mut c, "tracer", dir).map_err(|e| err(dir, e))?;
    }
    Ok(0)
}
