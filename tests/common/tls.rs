//! Certificates for the TLS tests, made with `openssl` in temporary
//! directories.

/// A CA and a certificate it signs for localhost and 127.0.0.1, made with
/// `openssl`; returns the CA's PEM path.
pub fn issue_certificate(dir: &std::path::Path, name: &str, cert: &std::path::Path, key: &std::path::Path) -> std::path::PathBuf {
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    openssl(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", &format!("/CN={name} test CA")]);
    let csr = format!("{name}.csr");
    let leaf_key = format!("{name}.key");
    openssl(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &leaf_key, "-out", &csr, "-subj", "/CN=localhost"]);
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("write ext");
    let leaf = format!("{name}.pem");
    openssl(&["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-CAcreateserial", "-out", &leaf, "-days", "2", "-extfile", &ext]);
    // Replace the served files the way a Secret update does: whole files
    // moved into place.
    for (from, to) in [(leaf, cert), (leaf_key, key)] {
        let staged = dir.join(format!("{from}.staged"));
        std::fs::copy(dir.join(&from), &staged).expect("stage");
        std::fs::rename(&staged, to).expect("move into place");
    }
    dir.join(ca)
}
