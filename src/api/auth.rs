//! Who may do what: principals with bearer tokens, roles and region scopes, and the masking of
//! personal data for those without the right to see it.
//!
//! ```text
//!   authorization: Bearer <token> ──SHA-256──▶ principals file (hashes only) ──▶ Principal
//!                                                                │ role, scopes, pii
//!   role          writes          reads                       log (ReadEvents, Subscribe)
//!   admin         all             all                         all
//!   auditor       none            all, history               all
//!   clerk         within scopes   within scopes               Subscribe within scopes
//!   statistician  none            GetStats, GetFlows only     none
//! ```
//!
//! A clerk's write must keep the household within its scopes before *and* after the change (a
//! relocation needs both regions); the writer checks that against the register as it decides,
//! so the check and the append cannot be separated by another write.
//!
//! Tokens are never stored: the file holds their SHA-256 (tokens are 256 random bits, so a
//! plain hash suffices). The file is re-read on SIGHUP.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rand::RngExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::app::Scope;
use crate::domain::{RegionCode, RegionPrefix};
use crate::error::Error;
use crate::pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Auditor,
    Clerk,
    Statistician,
}

/// One principal as the file stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalEntry {
    pub name: String,
    /// Hex SHA-256 of the bearer token.
    pub token_sha256: String,
    pub role: Role,
    /// Region prefixes (0, 2, 4, 6, 9 or 12 digits) a clerk or statistician is limited to.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Whether the principal may see ID numbers and full names.
    #[serde(default = "yes")]
    pub pii: bool,
}

fn yes() -> bool {
    true
}

/// The principals file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalsFile {
    pub principals: Vec<PrincipalEntry>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub scopes: Vec<RegionPrefix>,
    pub pii: bool,
}

impl Principal {
    /// The caller when authentication is off: everything, as "anonymous".
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            role: Role::Admin,
            scopes: Vec::new(),
            pii: true,
        }
    }

    fn limited(&self) -> bool {
        matches!(self.role, Role::Clerk | Role::Statistician)
            && !(self.role == Role::Statistician && self.scopes.is_empty())
    }

    /// The regions the principal's writes may touch.
    pub fn write_scope(&self) -> Result<Scope, Error> {
        match self.role {
            Role::Admin => Ok(Scope::All),
            Role::Clerk => Ok(Scope::Within(self.scopes.clone())),
            Role::Auditor | Role::Statistician => Err(self.denied("write to the register")),
        }
    }

    fn denied(&self, what: &str) -> Error {
        Error::PermissionDenied(format!("{} ({:?}) may not {what}", self.name, self.role))
    }

    fn covers(&self, prefix: RegionPrefix) -> bool {
        !self.limited()
            || self.scopes.iter().any(|scope| {
                scope.digits() <= prefix.digits() && {
                    let (first, last) = prefix.range();
                    scope.contains(first) && scope.contains(last)
                }
            })
    }

    /// May read rosters, stats, flows or diffs under `prefix`.
    pub fn may_read_region(&self, prefix: RegionPrefix, counts_only: bool) -> Result<(), Error> {
        if self.role == Role::Statistician && !counts_only {
            return Err(self.denied("read households (statisticians read counts)"));
        }
        if self.covers(prefix) {
            Ok(())
        } else {
            Err(self.denied(&format!(
                "read region '{prefix}': it is outside the principal's scopes"
            )))
        }
    }

    /// May read one household now in `region`.
    pub fn may_read_household(&self, region: RegionCode) -> Result<(), Error> {
        if self.role == Role::Statistician {
            return Err(self.denied("read households (statisticians read counts)"));
        }
        self.may_read_region(region.truncate(12), false)
    }

    /// May read the log; a clerk only through a subscription filtered within its scopes.
    pub fn may_read_log(&self, region: Option<RegionPrefix>) -> Result<(), Error> {
        match self.role {
            Role::Admin | Role::Auditor => Ok(()),
            Role::Clerk => match region {
                Some(prefix) if self.covers(prefix) => Ok(()),
                _ => Err(self.denied("read the log outside a subscription filtered to its scopes")),
            },
            Role::Statistician => Err(self.denied("read the log")),
        }
    }
}

/// The principals, by token hash; shared with the interceptor and replaced on reload.
#[derive(Debug, Clone, Default)]
pub struct Principals {
    by_token: Arc<RwLock<HashMap<String, Principal>>>,
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl PrincipalsFile {
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Io(format!(
                "cannot read the principals file {}: {e}",
                path.display()
            ))
        })?;
        let file: PrincipalsFile = serde_json::from_str(&text).map_err(|e| {
            Error::invalid(
                "principals",
                format!("{} is not a principals file: {e}", path.display()),
            )
        })?;
        file.principals()?;
        Ok(file)
    }

    /// Writes the file atomically (a temporary file renamed over it), readable by its owner only.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Io(e.to_string()))?;
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&temporary, path)?;
        Ok(())
    }

    /// The principals, checked: names unique, hashes well-formed, scopes valid.
    pub fn principals(&self) -> Result<HashMap<String, Principal>, Error> {
        let mut by_token = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, entry) in self.principals.iter().enumerate() {
            let field = |f: &str| format!("principals[{i}].{f}");
            if entry.name.trim().is_empty() || !names.insert(entry.name.clone()) {
                return Err(Error::invalid(
                    field("name"),
                    format!("'{}' is empty or not unique", entry.name),
                ));
            }
            if entry.token_sha256.len() != 64 || hex::decode(&entry.token_sha256).is_err() {
                return Err(Error::invalid(
                    field("token_sha256"),
                    "is not a hex SHA-256",
                ));
            }
            let scopes = entry
                .scopes
                .iter()
                .map(|s| RegionPrefix::parse(s).map_err(|e| Error::invalid(field("scopes"), e)))
                .collect::<Result<Vec<_>, _>>()?;
            by_token.insert(
                entry.token_sha256.to_ascii_lowercase(),
                Principal {
                    name: entry.name.clone(),
                    role: entry.role,
                    scopes,
                    pii: entry.pii,
                },
            );
        }
        Ok(by_token)
    }

    /// Adds a principal with a new random token; returns the token (shown once, never stored).
    pub fn add(
        &mut self,
        name: &str,
        role: Role,
        scopes: Vec<String>,
        pii: bool,
    ) -> Result<String, Error> {
        let bytes: [u8; 32] = rand::rng().random();
        let token = format!("rs_{}", hex::encode(bytes));
        self.principals.retain(|p| p.name != name);
        self.principals.push(PrincipalEntry {
            name: name.to_owned(),
            token_sha256: token_hash(&token),
            role,
            scopes,
            pii,
        });
        self.principals()?;
        Ok(token)
    }
}

impl Principals {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let principals = Self::default();
        principals.reload(path)?;
        Ok(principals)
    }

    /// Replaces the principals with the file's; on error keeps the old ones.
    pub fn reload(&self, path: &Path) -> Result<usize, Error> {
        let fresh = PrincipalsFile::read(path)?.principals()?;
        let count = fresh.len();
        *self
            .by_token
            .write()
            .expect("the principals lock is never held across a panic") = fresh;
        Ok(count)
    }

    fn find(&self, token: &str) -> Option<Principal> {
        self.by_token
            .read()
            .expect("the principals lock is never held across a panic")
            .get(&token_hash(token))
            .cloned()
    }
}

/// Authentication, as the services see it.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// No principals file: every caller is `anonymous` with every right (loopback only).
    Off,
    On(Principals),
}

impl Authentication {
    /// The caller of `request`, or `UNAUTHENTICATED`.
    pub fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let Authentication::On(principals) = self else {
            return Ok(Principal::anonymous());
        };
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::from(Error::Unauthenticated(
                    "no credentials: send 'authorization: Bearer <token>'".into(),
                ))
            })?;
        principals
            .find(token.trim())
            .ok_or_else(|| Status::from(Error::Unauthenticated("the token is not known".into())))
    }
}

/// `610602********0012`: the area code and the last four characters.
pub fn mask_id(id: &str) -> String {
    if id.len() == 18 && id.is_ascii() {
        format!("{}********{}", &id[..6], &id[14..])
    } else {
        "******************".into()
    }
}

/// A name reduced to the family name.
pub fn mask_name(name: &str) -> String {
    name.chars()
        .next()
        .map(|c| format!("{c}*"))
        .unwrap_or_default()
}

fn mask_member(m: &mut pb::Member) {
    m.id_number = mask_id(&m.id_number);
    m.name = mask_name(&m.name);
}

pub fn mask_household(h: &mut pb::Household) {
    h.members.iter_mut().for_each(mask_member);
    h.head_id = mask_id(&h.head_id);
    for helper in h.helpers.iter_mut().filter_map(|a| a.helper.as_mut()) {
        helper.name = mask_name(&helper.name);
    }
}

fn mask_identify(r: &mut pb::IdentifyRequest) {
    r.members.iter_mut().for_each(mask_member);
    r.head_id = mask_id(&r.head_id);
    if let Some(helper) = r.helper.as_mut() {
        helper.name = mask_name(&helper.name);
    }
}

fn mask_adjust(r: &mut pb::AdjustRequest) {
    for added in r.members_added.iter_mut().filter_map(|a| a.member.as_mut()) {
        mask_member(added);
    }
    for removed in &mut r.members_removed {
        removed.id_number = mask_id(&removed.id_number);
    }
    if let Some(head) = r.head_id.as_mut() {
        *head = mask_id(head);
    }
    if let Some(helper) = r.helper.as_mut() {
        helper.name = mask_name(&helper.name);
    }
}

/// Masks an event's payload. Its `body` is the exact stored bytes, which hold the personal data
/// and cannot be masked without breaking the chain, so it is withheld (emptied) and `hash` kept:
/// a masked reader can see there is a body it may not read, never a body that fails to verify.
pub fn mask_event(e: &mut pb::Event) {
    use pb::correct_request::Amendment;
    use pb::event::Payload;
    match e.payload.as_mut() {
        Some(Payload::Identify(r)) => mask_identify(r),
        Some(Payload::Adjust(r)) => mask_adjust(r),
        Some(Payload::Correct(c)) => match c.amendment.as_mut() {
            Some(Amendment::Identify(r)) => mask_identify(r),
            Some(Amendment::Adjust(r)) => mask_adjust(r),
            _ => {}
        },
        _ => {}
    }
    e.body = Vec::new();
    e.body_withheld = true;
}
