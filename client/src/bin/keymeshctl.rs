//! `keymeshctl`: a node's command-line tool. Creates and rotates the node's key file, sends a
//! message to another node through the relay, and listens for messages.
//!
//! ```text
//! keymeshctl [--relay URL] [--keys PATH] [--passphrase-file F] [--token-file F] [--json] COMMAND
//!   keys init --node ID     create the key file; prints the node id, identity public key, key version
//!   keys rotate             new encryption key version; saved, and published if relay and token are given
//!   keys show               the key file's public parts
//!   enroll --code C --management URL [--node ID]
//!                           enroll with a one-time code: creates the key file if missing (--node),
//!                           saves the first token to the token file, publishes keys to the relay
//!   send --to NODE [--file F]               send F (or stdin); prints the message id and duplicate flag
//!   listen [--count N] [--timeout-secs S]   print and acknowledge messages; stop after N or S idle seconds
//!   token request --right RES:OP... --reason R --out FILE [--management URL]
//!                           ask management for a token: within the ceiling it is saved to FILE
//!                           (0600); above it, the approval request's id is printed
//!   token status ID         an approval request as it stands
//!   token redeem ID --out FILE              execute an approved request once; the token to FILE
//!   secret get PATH --group G [--vault URL] print a secret's value
//!   secret put PATH --group G [--vault URL] write stdin as a secret's value
//! ```
//!
//! Settings: `--relay` or `KEYMESH_RELAY_URL`; `--keys` or `KEYMESH_KEYS` (default
//! `./keymesh-node-keys.json`); the key file passphrase from `KEYMESH_PASSPHRASE` or
//! `--passphrase-file` (never a flag: command lines are visible to other users);
//! `--token-file` or `KEYMESH_TOKEN_FILE` (the token as URL-safe base64 text; `enroll` writes
//! it, default `./keymesh-node-token`); `--management` or `KEYMESH_MANAGEMENT_URL`; the
//! enrollment code from `--code` or `KEYMESH_ENROLL_CODE` (codes are single use and expire
//! within minutes, but the variable keeps it out of the process list).
//!
//! Transport: `https://` and `wss://` are verified against the system's certificates, or only
//! the CAs in `--ca-file` / `KEYMESH_CA_FILE` (PEM); there is no way to skip verification.
//! `http://` reaches loopback only, unless `--allow-plain-http` (or
//! `KEYMESH_ALLOW_PLAIN_HTTP=1`) allows it elsewhere, with a warning: the token and proofs then
//! cross the network unencrypted.
//!
//! Exit codes: 0 ok; 1 other error; 2 usage or configuration (also a certificate that does not
//! verify, `tls_untrusted`, and plain HTTP off loopback, `plain_http_refused`); 3 authentication or
//! authorization refused (`invalid_token`, `token_expired`, `revoked`, `forbidden`, `proof_*`);
//! 4 the relay refused the message (`too_large`, `mailbox_full`, `unknown_recipient`,
//! `rate_limited`); 5 the relay is unreachable. Errors go to stderr, as
//! `{"error":{"code","message"}}` under `--json`.

use std::{
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use keymesh_client::{
    keyfile::{self, KdfCost, KeyFileError},
    keys::{KeysError, NodeKeys},
    relay::{ClientOptions, ErrorKind, Incoming, RelayClient, RelayError},
    service::{CallError, Service},
    transport::{Transport, TransportError},
};
use keymesh_proto::token::TOKEN_B64;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use zeroize::Zeroizing;

const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  other error
  2  usage or configuration error (also tls_untrusted: a certificate
     that does not verify; plain_http_refused: http:// off loopback)
  3  authentication or authorization refused:
     invalid_token, token_expired, revoked, forbidden, proof_*
  4  the relay refused the message:
     too_large, mailbox_full, unknown_recipient, rate_limited
  5  the relay is unreachable

Environment:
  KEYMESH_RELAY_URL   relay base URL (--relay)
  KEYMESH_KEYS        key file (--keys)
  KEYMESH_PASSPHRASE  key file passphrase (or --passphrase-file)
  KEYMESH_TOKEN_FILE  token file (--token-file)
  KEYMESH_MANAGEMENT_URL  management base URL (enroll, token: --management)
  KEYMESH_VAULT_URL       vault base URL (secret, send, listen: --vault; send and
                          listen take peers' identities from the vault and pin them
                          in the key file)
  KEYMESH_ENROLL_CODE     one-time enrollment code (enroll --code)
  KEYMESH_CA_FILE         trust only these CAs, PEM (--ca-file)
  KEYMESH_ALLOW_PLAIN_HTTP=1  allow http:// off loopback (--allow-plain-http)";

const DEFAULT_KEYS: &str = "./keymesh-node-keys.json";
const DEFAULT_TOKEN: &str = "./keymesh-node-token";
/// Largest message read from a file or stdin (the relay's default limit is 256 KiB).
const MAX_INPUT: u64 = 16 << 20;

/// An error with its exit code and stable code.
#[derive(Debug)]
struct Failure {
    exit: u8,
    code: String,
    message: String,
}

impl Failure {
    fn config(code: &str, message: impl Into<String>) -> Self {
        Self {
            exit: 2,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl From<RelayError> for Failure {
    fn from(e: RelayError) -> Self {
        let exit = match e.kind() {
            ErrorKind::Auth => 3,
            ErrorKind::Refused => 4,
            ErrorKind::Unreachable => 5,
            ErrorKind::Config => 2,
            ErrorKind::Other => 1,
        };
        Self {
            exit,
            code: e.code().to_owned(),
            message: e.to_string(),
        }
    }
}

impl From<TransportError> for Failure {
    fn from(e: TransportError) -> Self {
        Self::config(e.code(), e.to_string())
    }
}

impl From<KeyFileError> for Failure {
    fn from(e: KeyFileError) -> Self {
        Self::config(e.code(), e.to_string())
    }
}

impl From<KeysError> for Failure {
    fn from(e: KeysError) -> Self {
        Self::config(e.code(), e.to_string())
    }
}

fn cli() -> Command {
    let global = |name: &'static str, value: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .value_name(value)
            .global(true)
            .help(help)
    };
    Command::new("keymeshctl")
        .about("Keymesh node tool: the node key file, and messages through the relay")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .after_help(EXIT_CODES)
        .arg(global("relay", "URL", "Relay base URL, e.g. https://relay.example:7802 [env: KEYMESH_RELAY_URL]"))
        .arg(global("keys", "PATH", "Key file [env: KEYMESH_KEYS] [default: ./keymesh-node-keys.json]"))
        .arg(global("passphrase-file", "FILE", "File holding the key file passphrase (else env KEYMESH_PASSPHRASE)"))
        .arg(global("token-file", "FILE", "File holding the node's capability token, URL-safe base64 [env: KEYMESH_TOKEN_FILE]"))
        .arg(global("ca-file", "FILE", "Trust only the CA certificates in this PEM file for https:// and wss:// (default: the system's) [env: KEYMESH_CA_FILE]"))
        .arg(
            Arg::new("allow-plain-http")
                .long("allow-plain-http")
                .global(true)
                .action(ArgAction::SetTrue)
                .help("Allow http:// to hosts other than loopback: the token and proofs then cross the network unencrypted [env: KEYMESH_ALLOW_PLAIN_HTTP=1]"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .global(true)
                .action(ArgAction::SetTrue)
                .help("JSON output (JSON lines for listen); errors as JSON on stderr"),
        )
        .subcommand(
            Command::new("keys")
                .about("Create, rotate or show the node key file")
                .subcommand_required(true)
                .subcommand(
                    Command::new("init")
                        .about("Create the key file: a new identity key and encryption key version 1")
                        .arg(Arg::new("node").long("node").value_name("ID").required(true).help("The node id")),
                )
                .subcommand(Command::new("rotate").about(
                    "Make a new encryption key version; publish it when a relay and token are given",
                ))
                .subcommand(Command::new("show").about("Show the key file's public keys and versions")),
        )
        .subcommand(
            Command::new("enroll")
                .about("Enroll this node with a one-time code: key file (created with --node if missing), first token, keys published to the relay")
                .arg(Arg::new("code").long("code").value_name("CODE").help("The enrollment code [env: KEYMESH_ENROLL_CODE]"))
                .arg(Arg::new("management").long("management").value_name("URL").help("Management base URL [env: KEYMESH_MANAGEMENT_URL]"))
                .arg(Arg::new("node").long("node").value_name("ID").help("Node id for a new key file (an existing key file names its node)")),
        )
        .subcommand({
            let management = || {
                Arg::new("management")
                    .long("management")
                    .value_name("URL")
                    .help("Management base URL [env: KEYMESH_MANAGEMENT_URL]")
            };
            let out = || {
                Arg::new("out")
                    .long("out")
                    .value_name("FILE")
                    .required(true)
                    .help("Save the new token here (0600); the node's own token file is left alone")
            };
            let id = || Arg::new("id").value_name("ID").required(true).help("The approval request id");
            Command::new("token")
                .about("Ask management for a token with other rights (an approval above the node's ceiling)")
                .subcommand_required(true)
                .subcommand(
                    Command::new("request")
                        .about("Ask for a token; within the ceiling it is minted at once, above it an approval request is made")
                        .arg(Arg::new("right").long("right").value_name("RESOURCE:OP").action(ArgAction::Append).required(true)
                            .help("A right, e.g. db/password:read (repeat for more)"))
                        .arg(Arg::new("reason").long("reason").value_name("TEXT").required(true).help("Why (reviewers read it)"))
                        .arg(out())
                        .arg(management()),
                )
                .subcommand(Command::new("status").about("Show an approval request").arg(id()).arg(management()))
                .subcommand(
                    Command::new("redeem")
                        .about("Execute an approved request (once) and save its token")
                        .arg(id())
                        .arg(out())
                        .arg(management()),
                )
        })
        .subcommand({
            let common = |c: Command| {
                c.arg(Arg::new("path").value_name("PATH").required(true).help("Secret path, e.g. db/password"))
                    .arg(Arg::new("group").long("group").value_name("G").required(true).help("The group's vault"))
                    .arg(Arg::new("vault").long("vault").value_name("URL").help("Vault base URL [env: KEYMESH_VAULT_URL]"))
            };
            Command::new("secret")
                .about("Read or write a secret in the group's vault with the node's token")
                .subcommand_required(true)
                .subcommand(common(Command::new("get").about("Print a secret's value")))
                .subcommand(common(Command::new("put").about("Write stdin as a secret's value")))
        })
        .subcommand(
            Command::new("send")
                .about("Send a message (a file, or stdin) to a node; prints its id")
                .arg(Arg::new("to").long("to").value_name("NODE").required(true).help("The recipient node"))
                .arg(Arg::new("file").long("file").value_name("FILE").help("Read the message from FILE instead of stdin"))
                .arg(vault_identity_arg()),
        )
        .subcommand(
            Command::new("listen")
                .about("Print and acknowledge messages as they arrive")
                .arg(
                    Arg::new("count")
                        .long("count")
                        .value_name("N")
                        .value_parser(value_parser!(u64).range(1..))
                        .help("Stop after N messages"),
                )
                .arg(
                    Arg::new("timeout-secs")
                        .long("timeout-secs")
                        .value_name("S")
                        .value_parser(value_parser!(u64).range(1..))
                        .help("Stop after S seconds without a message"),
                )
                .arg(vault_identity_arg()),
        )
}

/// Settings shared by the commands.
struct Settings {
    json: bool,
    keys: PathBuf,
    relay: Option<String>,
    token_file: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    allow_plain_http: bool,
}

fn vault_identity_arg() -> Arg {
    Arg::new("vault").long("vault").value_name("URL").help(
        "Vault base URL: a peer's identity key is the vault's attested one on first contact, then pinned in the key file [env: KEYMESH_VAULT_URL]",
    )
}

fn setting(m: &ArgMatches, name: &str, env: &str) -> Option<String> {
    m.get_one::<String>(name)
        .cloned()
        .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
}

impl Settings {
    fn from(m: &ArgMatches) -> Self {
        Self {
            json: m.get_flag("json"),
            keys: PathBuf::from(
                setting(m, "keys", "KEYMESH_KEYS").unwrap_or_else(|| DEFAULT_KEYS.to_owned()),
            ),
            relay: setting(m, "relay", "KEYMESH_RELAY_URL"),
            token_file: setting(m, "token-file", "KEYMESH_TOKEN_FILE").map(PathBuf::from),
            passphrase_file: m.get_one::<String>("passphrase-file").map(PathBuf::from),
            ca_file: setting(m, "ca-file", "KEYMESH_CA_FILE").map(PathBuf::from),
            allow_plain_http: m.get_flag("allow-plain-http")
                || std::env::var("KEYMESH_ALLOW_PLAIN_HTTP").is_ok_and(|v| v == "1"),
        }
    }

    /// TLS trust (`--ca-file`, else the system's) and the plain-HTTP rule.
    fn transport(&self) -> Result<Transport, Failure> {
        let transport = match &self.ca_file {
            Some(path) => Transport::with_ca_file(path)?,
            None => Transport::default(),
        };
        Ok(if self.allow_plain_http {
            transport.allow_plain_http()
        } else {
            transport
        })
    }

    /// A client for the service at `url`.
    fn service(&self, url: &str) -> Result<Service, Failure> {
        Ok(Service::with_transport(
            url,
            Duration::from_secs(30),
            &self.transport()?,
        )?)
    }

    /// Relay client options: a short-lived command's retries, this transport.
    fn options(&self, max_attempts: u32) -> Result<ClientOptions, Failure> {
        Ok(ClientOptions {
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            max_reconnect_attempts: Some(max_attempts),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            transport: self.transport()?,
            ..ClientOptions::default()
        })
    }

    fn passphrase(&self) -> Result<SecretString, Failure> {
        let text = match &self.passphrase_file {
            Some(path) => Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                Failure::config("passphrase_file", format!("{}: {e}", path.display()))
            })?),
            None => Zeroizing::new(std::env::var("KEYMESH_PASSPHRASE").map_err(|_| {
                Failure::config(
                    "passphrase_missing",
                    "no passphrase: set KEYMESH_PASSPHRASE or pass --passphrase-file",
                )
            })?),
        };
        let trimmed = text.strip_suffix('\n').unwrap_or(&text);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        Ok(SecretString::from(trimmed.to_owned()))
    }

    fn load_keys(&self) -> Result<NodeKeys, Failure> {
        Ok(keyfile::load(&self.keys, &self.passphrase()?)?)
    }

    /// Relay URL and token, when both are configured.
    fn relay_settings(&self) -> Result<Option<(String, Vec<u8>)>, Failure> {
        match (&self.relay, &self.token_file) {
            (Some(relay), Some(token)) => Ok(Some((relay.clone(), read_token(token)?))),
            _ => Ok(None),
        }
    }

    fn client(&self, keys: NodeKeys, options: ClientOptions) -> Result<RelayClient, Failure> {
        let Some((relay, token)) = self.relay_settings()? else {
            return Err(Failure::config(
                "relay_not_configured",
                "this command needs --relay (or KEYMESH_RELAY_URL) and --token-file (or KEYMESH_TOKEN_FILE)",
            ));
        };
        Ok(RelayClient::new(keys, token, &relay, options)?)
    }
}

fn read_token(path: &Path) -> Result<Vec<u8>, Failure> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| Failure::config("token_file", format!("{}: {e}", path.display())))?,
    );
    TOKEN_B64.decode(text.trim()).map_err(|_| Failure {
        exit: 3,
        code: "invalid_token".into(),
        message: format!("{} does not hold a URL-safe base64 token", path.display()),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Print a result: the JSON value, or the text.
fn print(json: bool, value: &Value, text: &str) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

fn key_summary(keys: &NodeKeys) -> Value {
    json!({
        "node": keys.node(),
        "identity_public": hex::encode(keys.identity_public()),
        "enc_key_version": keys.current_version(),
        "enc_public": hex::encode(keys.current_enc_key().public),
    })
}

fn keys_init(s: &Settings, node: &str) -> Result<(), Failure> {
    let keys = NodeKeys::generate(node)?;
    keyfile::save(&s.keys, &keys, &s.passphrase()?, KdfCost::DEFAULT, false)?;
    let text = format!(
        "created {}\nnode: {}\nidentity public key: {}\nencryption key version: {}\n\
         Register the identity public key for this node to get its token.",
        s.keys.display(),
        keys.node(),
        hex::encode(keys.identity_public()),
        keys.current_version()
    );
    print(s.json, &key_summary(&keys), &text);
    Ok(())
}

fn keys_show(s: &Settings) -> Result<(), Failure> {
    let keys = s.load_keys()?;
    let mut value = key_summary(&keys);
    value["retired"] = keys
        .retired_versions()
        .iter()
        .map(|(v, at)| json!({ "version": v, "retired_ms": at }))
        .collect();
    let text = format!(
        "node: {}\nidentity public key: {}\nencryption key version: {} ({})\nretired versions kept: {:?}",
        keys.node(),
        hex::encode(keys.identity_public()),
        keys.current_version(),
        hex::encode(keys.current_enc_key().public),
        keys.retired_versions()
            .iter()
            .map(|(v, _)| *v)
            .collect::<Vec<_>>()
    );
    print(s.json, &value, &text);
    Ok(())
}

async fn keys_rotate(s: &Settings) -> Result<(), Failure> {
    let passphrase = s.passphrase()?;
    let (mut keys, pins, _) = keyfile::load_with_pins(&s.keys, &passphrase)?;
    let version = keys.rotate(now_ms())?;
    keyfile::save_with_pins(&s.keys, &keys, &pins, &passphrase, KdfCost::DEFAULT, true)?;
    let publish = s.relay_settings()?;
    let published = publish.is_some();
    let mut value = key_summary(&keys);
    if let Some((relay, token)) = publish {
        let client = RelayClient::new(keys, token, &relay, s.options(2)?)?;
        client.publish_keys().await?;
    }
    value["published"] = json!(published);
    let text = format!(
        "rotated to encryption key version {version}{}",
        if published {
            "; published to the relay"
        } else {
            "; not published (no relay and token given)"
        }
    );
    print(s.json, &value, &text);
    Ok(())
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        let exit = match &e {
            CallError::InvalidUrl(_) => 2,
            CallError::Refused {
                status: 401 | 403, ..
            } => 3,
            CallError::Unreachable(_) => 5,
            CallError::Transport(_) | CallError::Tls(_) => 2,
            _ => 1,
        };
        // A refusal's Display already ends with its code, which the error line appends.
        let message = match &e {
            CallError::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        };
        Self {
            exit,
            code: e.code().to_owned(),
            message,
        }
    }
}

/// The node's key file, token (text) and a client for the service at `--{flag}` / `env`.
fn node_session(
    s: &Settings,
    m: &ArgMatches,
    flag: &str,
    env: &str,
) -> Result<(NodeKeys, Zeroizing<String>, Service), Failure> {
    let url = setting(m, flag, env).ok_or_else(|| {
        Failure::config(
            &format!("{flag}_not_configured"),
            format!("this command needs --{flag} (or {env})"),
        )
    })?;
    let keys = s.load_keys()?;
    let path = s
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN));
    read_token(&path)?;
    let token = Zeroizing::new(
        std::fs::read_to_string(&path)
            .map_err(|e| Failure::config("token_file", format!("{}: {e}", path.display())))?
            .trim()
            .to_owned(),
    );
    let service = s.service(&url)?;
    Ok((keys, token, service))
}

/// Save a token document's token to `--out` (0600) and print what it allows.
fn save_token(s: &Settings, m: &ArgMatches, doc: &Value) -> Result<(), Failure> {
    let out = PathBuf::from(m.get_one::<String>("out").map_or("", String::as_str));
    let token = doc["token"].as_str().ok_or_else(|| Failure {
        exit: 1,
        code: "protocol".into(),
        message: "the answer holds no token".into(),
    })?;
    keyfile::write_atomic(&out, token.as_bytes(), true)?;
    let value = json!({
        "token_file": out.display().to_string(), "token_id": doc["token_id"], "grant": doc["grant"], "expires_at": doc["expires_at"],
    });
    let text = format!(
        "token saved to {} (expires {})",
        out.display(),
        doc["expires_at"]
    );
    print(s.json, &value, &text);
    Ok(())
}

async fn token(s: &Settings, m: &ArgMatches) -> Result<(), Failure> {
    use keymesh_client::management::{self, TokenAnswer};
    let (name, sub) = m
        .subcommand()
        .ok_or_else(|| Failure::config("usage", "token request, status or redeem"))?;
    let (keys, node_token, service) = node_session(s, sub, "management", "KEYMESH_MANAGEMENT_URL")?;
    let id = sub
        .try_get_one::<String>("id")
        .ok()
        .flatten()
        .map_or("", String::as_str);
    match name {
        "request" => {
            let rights = sub
                .get_many::<String>("right")
                .into_iter()
                .flatten()
                .map(|r| {
                    let (resource, op) = r.rsplit_once(':').ok_or_else(|| {
                        Failure::config("usage", format!("{r}: a right is RESOURCE:OP"))
                    })?;
                    Ok(json!({ "resource": resource, "op": op }))
                })
                .collect::<Result<Vec<_>, Failure>>()?;
            let reason = sub.get_one::<String>("reason").map_or("", String::as_str);
            match management::request_token(&service, &keys, &node_token, &json!(rights), reason)
                .await?
            {
                TokenAnswer::Token(doc) => save_token(s, sub, &doc),
                TokenAnswer::Approval(a) => {
                    let text = format!(
                        "above the node's ceiling: approval request {} is {}; run `keymeshctl token redeem {}` once it is approved",
                        a["id"].as_str().unwrap_or_default(),
                        a["status"].as_str().unwrap_or_default(),
                        a["id"].as_str().unwrap_or_default(),
                    );
                    print(s.json, &json!({ "approval": a }), &text);
                    Ok(())
                }
            }
        }
        "status" => {
            let v = management::token_request(&service, &keys, &node_token, id).await?;
            let text = format!(
                "{} {}: {} ({} decision(s))",
                v["approval"]["operation"].as_str().unwrap_or_default(),
                id,
                v["approval"]["status"].as_str().unwrap_or_default(),
                v["decisions"].as_array().map_or(0, Vec::len),
            );
            print(s.json, &v, &text);
            Ok(())
        }
        _ => {
            let doc = management::redeem(&service, &keys, &node_token, id).await?;
            save_token(s, sub, &doc)
        }
    }
}

async fn secret(s: &Settings, m: &ArgMatches) -> Result<(), Failure> {
    use keymesh_client::vault::{read_secret, write_secret};
    let (name, sub) = m
        .subcommand()
        .ok_or_else(|| Failure::config("usage", "secret get or put"))?;
    let (keys, node_token, vault) = node_session(s, sub, "vault", "KEYMESH_VAULT_URL")?;
    let path = sub.get_one::<String>("path").map_or("", String::as_str);
    let group = sub.get_one::<String>("group").map_or("", String::as_str);
    if name == "get" {
        let v = read_secret(&vault, &keys, &node_token, group, path).await?;
        let value = v["value"].as_str().unwrap_or_default();
        print(s.json, &v, value);
        return Ok(());
    }
    let mut value = Zeroizing::new(String::new());
    io::stdin()
        .take(MAX_INPUT)
        .read_to_string(&mut value)
        .map_err(|e| Failure::config("input", format!("stdin: {e}")))?;
    let trimmed = value.strip_suffix('\n').unwrap_or(&value);
    let v = write_secret(&vault, &keys, &node_token, group, path, trimmed).await?;
    let text = format!("{path}: version {}", v["version"]);
    print(s.json, &v, &text);
    Ok(())
}

async fn enroll(s: &Settings, m: &ArgMatches) -> Result<(), Failure> {
    let code = Zeroizing::new(setting(m, "code", "KEYMESH_ENROLL_CODE").ok_or_else(|| {
        Failure::config(
            "code_missing",
            "no enrollment code: pass --code or set KEYMESH_ENROLL_CODE",
        )
    })?);
    let management = setting(m, "management", "KEYMESH_MANAGEMENT_URL").ok_or_else(|| {
        Failure::config(
            "management_not_configured",
            "enroll needs --management (or KEYMESH_MANAGEMENT_URL)",
        )
    })?;
    let passphrase = s.passphrase()?;
    let (keys, created) = if s.keys.exists() {
        let keys = keyfile::load(&s.keys, &passphrase)?;
        if let Some(node) = m.get_one::<String>("node")
            && node != keys.node()
        {
            return Err(Failure::config(
                "node_mismatch",
                format!(
                    "{} belongs to node {}, not {node}",
                    s.keys.display(),
                    keys.node()
                ),
            ));
        }
        (keys, false)
    } else {
        let node = m.get_one::<String>("node").ok_or_else(|| {
            Failure::config(
                "node_missing",
                format!(
                    "{} does not exist: pass --node ID to create it",
                    s.keys.display()
                ),
            )
        })?;
        let keys = NodeKeys::generate(node)?;
        keyfile::save(&s.keys, &keys, &passphrase, KdfCost::DEFAULT, false)?;
        (keys, true)
    };
    let service = s.service(&management)?;
    let enrolled = keymesh_client::management::enroll(&service, &code, &keys).await?;
    let token_path = s
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN));
    keyfile::write_atomic(&token_path, enrolled.token.expose_secret().as_bytes(), true)?;
    let relay = s.relay.clone().or(enrolled.relay_url.clone());
    let mut value = json!({
        "node": enrolled.node,
        "group": enrolled.group,
        "ceiling": enrolled.ceiling,
        "token_id": enrolled.token_id,
        "grant": enrolled.grant,
        "expires_at": enrolled.expires_at,
        "token_file": token_path.display().to_string(),
        "key_file_created": created,
        "relay": relay,
    });
    if let Some(relay) = &relay {
        let token = read_token(&token_path)?;
        let client = RelayClient::new(keys, token, relay, s.options(2)?)?;
        client.publish_keys().await.map_err(|e| {
            let mut f = Failure::from(e);
            f.message = format!(
                "enrolled and saved the token to {}, but publishing the keys to {relay} failed ({}); `keymeshctl send` and `listen` publish them again",
                token_path.display(),
                f.message
            );
            f
        })?;
    }
    value["published"] = json!(relay.is_some());
    let text = format!(
        "enrolled node {} into group {} (ceiling {})\ntoken saved to {} (expires at unix {})\n{}",
        enrolled.node,
        enrolled.group,
        enrolled.ceiling,
        token_path.display(),
        enrolled.expires_at,
        match &relay {
            Some(r) => format!("keys published to {r}"),
            None => "keys not published (no relay given or suggested)".to_owned(),
        }
    );
    print(s.json, &value, &text);
    Ok(())
}

fn read_input(file: Option<&String>) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut out = Zeroizing::new(Vec::new());
    let read = match file {
        Some(path) => std::fs::File::open(path)
            .and_then(|f| f.take(MAX_INPUT + 1).read_to_end(&mut out))
            .map_err(|e| Failure::config("input", format!("{path}: {e}"))),
        None => io::stdin()
            .lock()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut out)
            .map_err(|e| Failure::config("input", format!("stdin: {e}"))),
    };
    read?;
    if out.len() as u64 > MAX_INPUT {
        return Err(Failure::config(
            "input",
            "the message is larger than 16 MiB",
        ));
    }
    Ok(out)
}

/// A relay client whose peers' identities come from the key file's pins and, on first contact,
/// from the vault's attestation (`--vault`), never from the relay's word alone when either is
/// there.
fn pinned_client(
    s: &Settings,
    m: &ArgMatches,
    passphrase: &SecretString,
    max_attempts: u32,
) -> Result<RelayClient, Failure> {
    let (keys, pins, _) = keyfile::load_with_pins(&s.keys, passphrase)?;
    let mut options = s.options(max_attempts)?;
    options.identity_vault = setting(m, "vault", "KEYMESH_VAULT_URL");
    let client = s.client(keys, options)?;
    for (node, identity) in &pins {
        client.pin_identity(node, *identity);
    }
    Ok(client)
}

/// Seal the identities the vault attested during this run into the key file, read again first
/// so keys rotated meanwhile by another process are kept. A failure is reported on stderr and
/// does not change the command's outcome: what was sent or printed stands, and the next run asks
/// the vault again.
fn keep_attested(s: &Settings, client: &RelayClient, passphrase: &SecretString) {
    if let Err(e) = save_attested(s, client, passphrase) {
        report(s.json, &e);
    }
}

fn save_attested(
    s: &Settings,
    client: &RelayClient,
    passphrase: &SecretString,
) -> Result<(), Failure> {
    let attested = client.attested_identities();
    if attested.is_empty() {
        return Ok(());
    }
    let (keys, mut pins, cost) = keyfile::load_with_pins(&s.keys, passphrase)?;
    let before = pins.len();
    pins.extend(attested);
    if pins.len() != before {
        keyfile::save_with_pins(&s.keys, &keys, &pins, passphrase, cost, true)?;
    }
    Ok(())
}

async fn send(s: &Settings, m: &ArgMatches) -> Result<(), Failure> {
    let to = m.get_one::<String>("to").map_or("", String::as_str);
    let message = read_input(m.get_one::<String>("file"))?;
    let passphrase = s.passphrase()?;
    let client = pinned_client(s, m, &passphrase, 2)?;
    // Idempotent: the recipient needs this node's key to open the message.
    client.publish_keys().await?;
    let receipt = client.send(to, &message).await;
    client.close().await;
    keep_attested(s, &client, &passphrase);
    let receipt = receipt?;
    let id = hex::encode(receipt.id);
    print(
        s.json,
        &json!({ "id": id, "duplicate": receipt.duplicate }),
        &format!("sent {id} to {to} (duplicate: {})", receipt.duplicate),
    );
    Ok(())
}

async fn listen(s: &Settings, m: &ArgMatches) -> Result<(), Failure> {
    let count = m.get_one::<u64>("count").copied();
    let idle = m
        .get_one::<u64>("timeout-secs")
        .map(|s| Duration::from_secs(*s));
    let passphrase = s.passphrase()?;
    let client = pinned_client(s, m, &passphrase, 10)?;
    client.publish_keys().await?;
    client.connect().await?;
    let result = listen_loop(s, &client, count, idle).await;
    // Written before the close: the acknowledgements of what was printed.
    client.close().await;
    keep_attested(s, &client, &passphrase);
    result
}

async fn listen_loop(
    s: &Settings,
    client: &RelayClient,
    count: Option<u64>,
    idle: Option<Duration>,
) -> Result<(), Failure> {
    let mut received = 0u64;
    let mut stdout = io::stdout();
    while count.is_none_or(|n| received < n) {
        let next = match idle {
            Some(idle) => match tokio::time::timeout(idle, client.next_incoming()).await {
                Ok(next) => next,
                Err(_) => return Ok(()),
            },
            None => client.next_incoming().await,
        };
        match next {
            Ok(Incoming::Message(msg)) => {
                let id = hex::encode(msg.id);
                let written = if s.json {
                    let line = json!({
                        "seq": msg.seq,
                        "id": id,
                        "from": msg.from,
                        "sent_ms": msg.sent_ms,
                        "created_ms": msg.created_ms,
                        "payload": STANDARD.encode(&*msg.plaintext),
                    });
                    writeln!(stdout, "{line}")
                } else {
                    writeln!(stdout, "--- from {} (id {id}, seq {})", msg.from, msg.seq)
                        .and_then(|()| stdout.write_all(&msg.plaintext))
                        .and_then(|()| {
                            if msg.plaintext.ends_with(b"\n") {
                                Ok(())
                            } else {
                                writeln!(stdout)
                            }
                        })
                };
                written.and_then(|()| stdout.flush()).map_err(|e| Failure {
                    exit: 1,
                    code: "output".into(),
                    message: format!("stdout: {e}"),
                })?;
                // Printed, so handled: the relay may delete it.
                client.ack(msg.seq)?;
                received += 1;
            }
            Ok(Incoming::Expired(e)) => {
                let value = json!({ "expired": { "after": e.after, "through": e.through, "count": e.count } });
                let text = format!(
                    "--- {} message(s) expired at the relay before they were received (seq {}..={})",
                    e.count,
                    e.after.saturating_add(1),
                    e.through
                );
                print(s.json, &value, &text);
            }
            // A replay or a stale message: acknowledged by the client, never printed as a message.
            Ok(refused @ (Incoming::Replayed { .. } | Incoming::Stale { .. })) => {
                if let Err(e) = refused.into_message() {
                    report(s.json, &Failure::from(e));
                }
            }
            Err(e @ RelayError::Undecryptable { .. }) => report(s.json, &Failure::from(e)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn report(json: bool, f: &Failure) {
    if json {
        eprintln!(
            "{}",
            json!({ "error": { "code": f.code, "message": f.message } })
        );
    } else {
        eprintln!("keymeshctl: {} ({})", f.message, f.code);
    }
}

async fn run(m: &ArgMatches) -> Result<(), Failure> {
    let s = Settings::from(m);
    match m.subcommand() {
        Some(("keys", k)) => match k.subcommand() {
            Some(("init", i)) => {
                keys_init(&s, i.get_one::<String>("node").map_or("", String::as_str))
            }
            Some(("rotate", _)) => keys_rotate(&s).await,
            Some(("show", _)) => keys_show(&s),
            _ => Err(Failure::config("usage", "unknown keys command")),
        },
        Some(("enroll", em)) => enroll(&s, em).await,
        Some(("token", tm)) => token(&s, tm).await,
        Some(("secret", sm)) => secret(&s, sm).await,
        Some(("send", sm)) => send(&s, sm).await,
        Some(("listen", lm)) => listen(&s, lm).await,
        _ => Err(Failure::config("usage", "unknown command")),
    }
}

fn main() -> ExitCode {
    let matches = match cli().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let usage = e.use_stderr();
            if usage && std::env::args().any(|a| a == "--json") {
                let rendered = e.render().to_string();
                let message = rendered
                    .split("\n\nUsage")
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                report(true, &Failure::config("usage", message));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(if usage { 2 } else { 0 });
        }
    };
    let json = matches.get_flag("json");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(
                json,
                &Failure {
                    exit: 1,
                    code: "runtime".into(),
                    message: e.to_string(),
                },
            );
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(&matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            report(json, &f);
            ExitCode::from(f.exit)
        }
    }
}
