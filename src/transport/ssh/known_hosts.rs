//! OpenSSH `known_hosts` lookup done here rather than by libssh2: libssh2 stops reading a file
//! at the first line it cannot parse, ignores `@revoked`, treats a key of another type as a
//! changed key, and cannot say which key types are known for a host (needed to negotiate the
//! host key algorithm the way OpenSSH does).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::localfile::{read_regular, ReadError};

/// Far above any real known_hosts (hundreds of thousands of hashed entries): a bound on memory,
/// not a limit anyone meets.
const MAX_KNOWN_HOSTS_BYTES: u64 = 64 << 20;

/// The entries of one known_hosts file.
pub(crate) struct KnownHosts {
    pub path: PathBuf,
    /// The file does not exist (every host is then unknown).
    pub missing: bool,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug)]
enum Names {
    /// `|1|salt|hash`: HMAC-SHA1 of the lookup name keyed with the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// Comma-separated patterns (`*`, `?`, `!negation`).
    Patterns(String),
}

#[derive(Debug)]
struct Entry {
    line: usize,
    marker: Marker,
    names: Names,
    key_type: String,
    key: Vec<u8>,
}

/// What the file says about the key a server presented.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Trusted,
    /// No entry for this host name.
    Unknown,
    /// Entries exist for the host but none holds this key: `(line, key type)` of each.
    Changed(Vec<(usize, String)>),
    /// The key is listed under `@revoked` (line).
    Revoked(usize),
}

/// The name OpenSSH looks up: `host` on port 22, `[host]:port` otherwise.
pub(crate) fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

impl KnownHosts {
    /// Read the file, bounded: a FIFO or a device named as known_hosts is refused at once
    /// (it would hang the connect or read until memory runs out), and so is a huge file.
    pub fn load(path: &Path) -> Result<KnownHosts> {
        match read_regular(path, MAX_KNOWN_HOSTS_BYTES) {
            Ok(bytes) => Ok(KnownHosts {
                path: path.to_path_buf(),
                missing: false,
                entries: parse(&String::from_utf8_lossy(&bytes)),
            }),
            Err(ReadError::NotFound) => Ok(KnownHosts {
                path: path.to_path_buf(),
                missing: true,
                entries: Vec::new(),
            }),
            Err(e) => bail!("ssh.known_hosts {} {e}", path.display()),
        }
    }

    #[cfg(test)]
    fn from_str(text: &str) -> KnownHosts {
        KnownHosts {
            path: PathBuf::from("known_hosts"),
            missing: false,
            entries: parse(text),
        }
    }

    fn plain_entries_for<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.marker == Marker::None && e.names.matches(name))
    }

    /// The key types known for `name`, in file order, without repeats.
    pub fn key_types_for(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in self.plain_entries_for(name) {
            if !out.contains(&e.key_type) {
                out.push(e.key_type.clone());
            }
        }
        out
    }

    /// Check the raw key blob a server presented under the lookup name.
    pub fn verify(&self, name: &str, key: &[u8]) -> Verdict {
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.key == key)
        {
            return Verdict::Revoked(e.line);
        }
        let mut others = Vec::new();
        for e in self.plain_entries_for(name) {
            if e.key == key {
                return Verdict::Trusted;
            }
            others.push((e.line, e.key_type.clone()));
        }
        if others.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Changed(others)
        }
    }
}

fn parse(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let marker = match first {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => Marker::CertAuthority,
            m if m.starts_with('@') => continue,
            _ => Marker::None,
        };
        if marker != Marker::None {
            first = match fields.next() {
                Some(f) => f,
                None => continue,
            };
        }
        let (Some(key_type), Some(key_b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(key) = base64_decode(key_b64) else {
            continue;
        };
        let names = if let Some(rest) = first.strip_prefix("|1|") {
            let mut parts = rest.splitn(2, '|');
            let (Some(salt), Some(hash)) = (
                parts.next().and_then(base64_decode),
                parts.next().and_then(base64_decode),
            ) else {
                continue;
            };
            Names::Hashed { salt, hash }
        } else {
            Names::Patterns(first.to_ascii_lowercase())
        };
        // Lines OpenSSH would skip (bad base64, unknown hash) are skipped, not fatal, so one
        // broken line does not hide every later host as libssh2 does.
        entries.push(Entry {
            line: i + 1,
            marker,
            names,
            key_type: key_type.to_string(),
            key,
        });
    }
    entries
}

impl Names {
    fn matches(&self, name: &str) -> bool {
        match self {
            Names::Hashed { salt, hash } => hmac_sha1(salt, name.as_bytes()).as_slice() == hash,
            Names::Patterns(list) => {
                let mut positive = false;
                for pat in list.split(',') {
                    if let Some(neg) = pat.strip_prefix('!') {
                        if glob(neg.as_bytes(), name.as_bytes()) {
                            return false;
                        }
                    } else if glob(pat.as_bytes(), name.as_bytes()) {
                        positive = true;
                    }
                }
                positive
            }
        }
    }
}

/// OpenSSH's `match_pattern`: `*` any run, `?` one character.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// The algorithm name inside an SSH public key blob (`ssh-ed25519`, `ssh-rsa`, ...).
pub(crate) fn key_type(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4usize.checked_add(len)?)?;
    String::from_utf8(name.to_vec()).ok()
}

/// OpenSSH's fingerprint text for a SHA-256 digest: `SHA256:` and unpadded base64.
pub(crate) fn fingerprint(sha256: &[u8]) -> String {
    format!("SHA256:{}", base64_encode(sha256).trim_end_matches('='))
}

/// The `HostKey` method preference that makes the server present a key type we already know
/// (as OpenSSH orders HostKeyAlgorithms), limited to what libssh2 supports. `None` when none of
/// the known types can be negotiated.
pub(crate) fn host_key_preference(known: &[String], supported: &[&str]) -> Option<String> {
    const ORDER: &[(&str, &[&str])] = &[
        ("ssh-ed25519", &["ssh-ed25519"]),
        ("ecdsa-sha2-nistp256", &["ecdsa-sha2-nistp256"]),
        ("ecdsa-sha2-nistp384", &["ecdsa-sha2-nistp384"]),
        ("ecdsa-sha2-nistp521", &["ecdsa-sha2-nistp521"]),
        ("ssh-rsa", &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]),
        ("ssh-dss", &["ssh-dss"]),
    ];
    let algs: Vec<&str> = ORDER
        .iter()
        .filter(|(t, _)| known.iter().any(|k| k == t))
        .flat_map(|(_, a)| a.iter().copied())
        .filter(|a| supported.contains(a))
        .collect();
    if algs.is_empty() {
        None
    } else {
        Some(algs.join(","))
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if k <= chunk.len() {
                out.push(B64[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (t, word) in block.chunks_exact(4).enumerate() {
            w[t] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for t in 16..80 {
            w[t] = (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (t, wt) in w.iter().enumerate() {
            let (f, k) = match t {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let temp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wt);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..20].copy_from_slice(&sha1(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(msg);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&sha1(&inner));
    sha1(&outer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha1_and_hmac_vectors() {
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        // RFC 2202 test case 1 and 2.
        assert_eq!(
            hex(&hmac_sha1(&[0x0b; 20], b"Hi There")),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn base64_round_trip() {
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert!(base64_decode("not*base64").is_none());
    }

    #[test]
    fn lookup_names_follow_openssh() {
        assert_eq!(lookup_name("Db1.Example", 22), "db1.example");
        assert_eq!(lookup_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
    }

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdEGRV1YyW0H2l1hLcxHb3M8mU3Zz3mH3bCqPq+S9nQ";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIFW3FvOfSx5f0i4pPcFYcX1T3sWAnK3uUqHkW1Q2q2Sb";

    #[test]
    fn verify_plain_port_and_wildcards() {
        let kh = KnownHosts::from_str(&format!(
            "# comment\n\
             garbage line\n\
             [127.0.0.1]:2222 ssh-ed25519 {KEY_A}\n\
             *.db.invalid,!bad.db.invalid ssh-ed25519 {KEY_B}\n"
        ));
        let a = base64_decode(KEY_A).unwrap();
        let b = base64_decode(KEY_B).unwrap();
        assert_eq!(kh.verify("[127.0.0.1]:2222", &a), Verdict::Trusted);
        assert_eq!(
            kh.verify("[127.0.0.1]:2222", &b),
            Verdict::Changed(vec![(3, "ssh-ed25519".into())])
        );
        // The port-22 name is a different host for OpenSSH.
        assert_eq!(kh.verify("127.0.0.1", &a), Verdict::Unknown);
        assert_eq!(kh.verify("x.db.invalid", &b), Verdict::Trusted);
        assert_eq!(kh.verify("bad.db.invalid", &b), Verdict::Unknown);
        assert_eq!(kh.key_types_for("[127.0.0.1]:2222"), vec!["ssh-ed25519"]);
        assert_eq!(key_type(&a).as_deref(), Some("ssh-ed25519"));
    }

    #[test]
    fn hashed_entries_and_revocation() {
        // `ssh-keygen -H` style: HMAC-SHA1 of the name with a random salt.
        let salt = b"0123456789abcdefghij";
        let name = "[10.1.2.3]:2200";
        let hashed = format!(
            "|1|{}|{}",
            base64_encode(salt),
            base64_encode(&hmac_sha1(salt, name.as_bytes()))
        );
        let kh = KnownHosts::from_str(&format!(
            "{hashed} ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n"
        ));
        let a = base64_decode(KEY_A).unwrap();
        let b = base64_decode(KEY_B).unwrap();
        assert_eq!(kh.verify(name, &a), Verdict::Trusted);
        assert_eq!(kh.verify("[10.1.2.3]:2201", &a), Verdict::Unknown);
        assert_eq!(kh.verify(name, &b), Verdict::Revoked(2));
    }

    #[test]
    fn host_key_preference_uses_known_types() {
        let supported = [
            "ecdsa-sha2-nistp256",
            "ssh-ed25519",
            "rsa-sha2-256",
            "ssh-rsa",
        ];
        assert_eq!(
            host_key_preference(&["ssh-rsa".into(), "ssh-ed25519".into()], &supported).as_deref(),
            Some("ssh-ed25519,rsa-sha2-256,ssh-rsa")
        );
        assert_eq!(host_key_preference(&["ssh-dss".into()], &supported), None);
    }

    #[test]
    fn fingerprint_format() {
        assert_eq!(
            fingerprint(&[0u8; 32]),
            format!("SHA256:{}", "A".repeat(43))
        );
    }
}
