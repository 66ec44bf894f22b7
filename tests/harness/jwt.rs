//! Operator-mode (decentralised JWT auth) helpers for tests that run a real
//! `nats-server` (checked against v2.9.10).
//!
//! Everything is made fresh in memory with the `nkeys` crate: an operator, its
//! system account, any number of accounts, and users of those accounts. The JWTs
//! are written by hand in the nats-io/jwt v2 format:
//!
//! * header `{"typ":"JWT","alg":"ed25519-nkey"}`;
//! * claims `{jti, iat, iss, name, sub, nats: {.., type, version: 2}}`, where `jti`
//!   is base32 (RFC 4648 alphabet, no padding) of SHA-512/256 over the JSON of the
//!   standard claims with `jti` empty (what jwt v2 does; the server does not check
//!   it, but it keeps the tokens identical in shape to `nsc`'s);
//! * token = `b64url(header) "." b64url(claims) "." b64url(ed25519(issuer, first two parts))`.
//!
//! ```ignore
//! let mut op = Operator::new();
//! let acc = op.account("APP", true);             // preloaded, JetStream enabled
//! let conf = format!("listen: 127.0.0.1:4222\n{}", op.server_config());
//! std::fs::write("user.creds", acc.user_creds("alice"))?;
//! ```
//!
//! A user of an account the server does not know: make a second `Operator` and use
//! one of its accounts (its JWT is in no server's `resolver_preload`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha512_256};

/// An operator key, its system account and the accounts it has signed.
pub struct Operator {
    kp: KeyPair,
    jwt: String,
    sys: Account,
    /// (account public key, account JWT) for `resolver_preload`, system account first.
    preload: Vec<(String, String)>,
}

/// An account signed by an [`Operator`]; it signs its users' JWTs.
pub struct Account {
    kp: KeyPair,
    jwt: String,
}

impl Operator {
    /// A fresh operator (self-signed JWT) with a fresh system account `SYS`.
    pub fn new() -> Self {
        let kp = KeyPair::new_operator();
        let sys_kp = KeyPair::new_account();
        let op_pub = kp.public_key();
        let nats =
            json!({ "system_account": sys_kp.public_key(), "type": "operator", "version": 2 });
        let jwt = encode(&kp, &op_pub, "OP", nats);
        let sys_jwt = encode(&kp, &sys_kp.public_key(), "SYS", account_nats(false));
        let preload = vec![(sys_kp.public_key(), sys_jwt.clone())];
        Operator {
            kp,
            jwt,
            sys: Account {
                kp: sys_kp,
                jwt: sys_jwt,
            },
            preload,
        }
    }

    /// The operator's JWT (what `operator:` in the server config takes).
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The system account (its users may read `$SYS.>`).
    pub fn system_account(&self) -> &Account {
        &self.sys
    }

    /// A new account with unlimited limits (connections, leafnodes, subs, data,
    /// payload, imports, exports, wildcards), signed by this operator and listed
    /// in [`server_config`](Self::server_config)'s `resolver_preload`. With
    /// `jetstream`, its JWT also has unlimited JetStream limits, so JetStream is on
    /// for it when the server runs with `jetstream { .. }`.
    pub fn account(&mut self, name: &str, jetstream: bool) -> Account {
        let kp = KeyPair::new_account();
        let jwt = encode(&self.kp, &kp.public_key(), name, account_nats(jetstream));
        self.preload.push((kp.public_key(), jwt.clone()));
        Account { kp, jwt }
    }

    /// Server-config lines for operator mode with the in-memory resolver: the
    /// operator JWT inlined, the system account, and every account preloaded.
    /// Add `listen`, `leafnodes { listen: .. }`, `jetstream { .. }` around it.
    pub fn server_config(&self) -> String {
        let mut s = format!(
            "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n",
            self.jwt,
            self.sys.public_key()
        );
        for (public, jwt) in &self.preload {
            s.push_str(&format!("  {public}: \"{jwt}\"\n"));
        }
        s.push_str("}\n");
        s
    }
}

impl Default for Operator {
    fn default() -> Self {
        Self::new()
    }
}

impl Account {
    /// The account's public nkey (`A...`).
    pub fn public_key(&self) -> String {
        self.kp.public_key()
    }

    /// The account's JWT.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The text of a `.creds` file for a new user of this account, with no
    /// permission restrictions and no limits; usable by async-nats
    /// (`ConnectOptions::credentials_file`) and by a leafnode remote
    /// (`credentials: "/path/user.creds"`).
    pub fn user_creds(&self, name: &str) -> String {
        let user = KeyPair::new_user();
        let nats = json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        });
        let jwt = encode(&self.kp, &user.public_key(), name, nats);
        let seed = user.seed().expect("a fresh user key has a seed");
        // Same decoration as nats-io/jwt's FormatUserConfig (5 dashes before BEGIN,
        // 6 around END); async-nats only needs >= 3 dashes on each side.
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }
}

/// The `nats` part of an account JWT: everything unlimited, JetStream on request.
fn account_nats(jetstream: bool) -> Value {
    let mut limits = json!({
        "subs": -1, "data": -1, "payload": -1,
        "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
    });
    if jetstream {
        for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[k] = json!(-1);
        }
    }
    json!({
        "limits": limits,
        "default_permissions": { "pub": {}, "sub": {} },
        "type": "account", "version": 2,
    })
}

/// Signs a v2 JWT for `sub` by `issuer`, with the given `nats` claims.
fn encode(issuer: &KeyPair, sub: &str, name: &str, nats: Value) -> String {
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let iss = issuer.public_key();
    let name_json = Value::from(name).to_string();
    // jwt v2 hashes Go's json.Marshal(ClaimsData) with ID empty: field order
    // aud, exp, jti, iat, iss, name, nbf, sub, empty ones omitted.
    let std_claims = format!(r#"{{"iat":{iat},"iss":"{iss}","name":{name_json},"sub":"{sub}"}}"#);
    let jti = base32_nopad(&Sha512_256::digest(std_claims.as_bytes()));
    let claims =
        json!({ "jti": jti, "iat": iat, "iss": iss, "name": name, "sub": sub, "nats": nats });
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{body}");
    let sig = issuer
        .sign(signing_input.as_bytes())
        .expect("issuer key has a seed");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// RFC 4648 base32 (standard alphabet), without padding.
fn base32_nopad(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buf, mut bits) = (String::new(), 0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}
