//! A web config for `tracer watch --web-config` made the way an operator makes one: a CA and a
//! server certificate for 127.0.0.1 from openssl, a bcrypt hash from htpasswd.

use std::{path::PathBuf, process::Command};

use crate::{sh, tmp_path, tool};

pub struct Secured {
    /// The CA that signed the server certificate (what the scraper trusts).
    pub ca: PathBuf,
    pub web_config: PathBuf,
    pub user: String,
    pub password: String,
}

fn openssl(dir: &PathBuf, args: &[&str]) {
    sh(Command::new(tool("openssl")).current_dir(dir).args(args));
}

/// Make certificates, a password hash and the web config file in a fresh directory.
pub fn secured(tag: &str) -> Secured {
    let dir = tmp_path(&format!("webcfg-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("web config dir");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=tracer test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
    let (user, password) = (
        "prometheus".to_string(),
        format!("pw-{}", std::process::id()),
    );
    // `htpasswd -nbBC 10 USER PASSWORD` prints `USER:$2y$10$...`.
    let line = sh(Command::new(tool("htpasswd")).args(["-nbBC", "10", &user, &password]));
    let hash = line
        .trim()
        .strip_prefix(&format!("{user}:"))
        .unwrap_or_else(|| panic!("htpasswd printed {line:?}"))
        .to_string();
    let web_config = dir.join("web.yml");
    // Relative file names: tracer takes them from the config file's directory.
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n\
             basic_auth_users:\n  {user}: '{hash}'\n"
        ),
    )
    .expect("web.yml");
    Secured {
        ca: dir.join("ca.pem"),
        web_config,
        user,
        password,
    }
}
