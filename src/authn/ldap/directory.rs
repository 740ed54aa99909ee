//! One configured directory: the sign-in flow (service bind, escaped search,
//! user bind, account status, groups) and the re-check of a known user.
//!
//! Security invariants kept here:
//! - an empty password, an over-long one, or an unusable username never reaches
//!   a bind (an empty password is an unauthenticated bind, which many servers
//!   report as success);
//! - an unknown name costs a bind too (against a DN that cannot exist), so the
//!   answer time does not tell which accounts exist;
//! - a filter that matches more than one entry is a refusal, never a choice;
//! - every sign-in runs under one overall time budget: a slow directory gives
//!   "unavailable", never a hung request.

use std::sync::Arc;

use ldap3::{Scope, SearchEntry};
use ring::rand::SecureRandom;
use secrecy::{ExposeSecret, SecretString};

use super::config::{DirectoryConfig, UserLookup, UserScope};
use super::conn::{budget, Lease, Pool};
use super::entry::{self, STATUS_ATTRIBUTES};
use super::escape::{self, fill_dn, fill_filter};
use super::LdapError;
use crate::types::Username;

/// A user as the directory describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The entry's DN.
    pub dn: String,
    /// Account name for policy: the username attribute, lower-cased.
    pub username: String,
    /// Groups for policy, prefixed.
    pub groups: Vec<String>,
    /// Whether the directory had more groups than `max_groups`.
    pub groups_cut: bool,
}

/// One `[[ldap]]` directory with its connection pool.
pub struct Directory {
    /// Its settings.
    pub cfg: Arc<DirectoryConfig>,
    pool: Pool,
    /// A DN no entry has, bound against for unknown names.
    dummy_dn: String,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("name", &self.cfg.name)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// Reads the bind password and CA file; contacts nothing.
    pub fn new(cfg: DirectoryConfig) -> Result<Directory, LdapError> {
        let mut random = [0u8; 12];
        ring::rand::SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| LdapError::Internal("no randomness".into()))?;
        let base = match &cfg.user {
            UserLookup::Search { base, .. } => base.clone(),
            UserLookup::Dn(t) => t
                .split_once(',')
                .map_or_else(|| "dc=invalid".to_owned(), |(_, b)| b.to_owned()),
        };
        let dummy_dn = format!(
            "cn=berth-no-such-user-{},{base}",
            data_encoding::HEXLOWER.encode(&random)
        );
        let cfg = Arc::new(cfg);
        Ok(Directory {
            pool: Pool::new(cfg.clone())?,
            cfg,
            dummy_dn,
        })
    }

    fn attributes(&self) -> Vec<&str> {
        let mut attrs = vec![self.cfg.username_attribute.as_str()];
        if let Some(g) = &self.cfg.group_attribute {
            attrs.push(g);
        }
        attrs.extend(STATUS_ATTRIBUTES);
        attrs
    }

    async fn within<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, LdapError>>,
    ) -> Result<T, LdapError> {
        let limit = budget(&self.cfg);
        tokio::time::timeout(limit, f).await.map_err(|_| {
            LdapError::Unavailable(format!("the directory did not answer within {limit:?}"))
        })?
    }

    /// Connects and binds as the service account: the directory is reachable
    /// and berth's credentials work.
    pub async fn probe(&self) -> Result<(), LdapError> {
        self.within(async {
            let mut lease = self.pool.lease().await?;
            lease.service().await
        })
        .await
    }

    /// Checks `login`'s password; the user as policy will see them.
    pub async fn authenticate(
        &self,
        login: &str,
        password: &SecretString,
        now: i64,
    ) -> Result<DirectoryUser, LdapError> {
        if !escape::acceptable_username(login) {
            return Err(LdapError::Rejected("username not acceptable".into()));
        }
        let len = password.expose_secret().len();
        if len == 0 {
            return Err(LdapError::Rejected("empty password".into()));
        }
        if len > escape::MAX_PASSWORD {
            return Err(LdapError::Rejected(format!(
                "password longer than {} bytes",
                escape::MAX_PASSWORD
            )));
        }
        self.within(async {
            let mut lease = self.pool.lease().await?;
            let Some(found) = self.find(&mut lease, login).await? else {
                // As much work as a wrong password.
                let _ = lease.bind_user(&self.dummy_dn, password).await?;
                return Err(LdapError::Rejected("no such user".into()));
            };
            if !lease.bind_user(&found.dn, password).await? {
                return Err(LdapError::Rejected("wrong password".into()));
            }
            if let Some(why) = entry::disabled(&found, now) {
                return Err(LdapError::Rejected(why.into()));
            }
            self.user_of(&mut lease, &found).await
        })
        .await
    }

    /// Looks `login` up again without a password (refresh tokens): refused when
    /// the entry is gone, is another entry now, or is switched off.
    pub async fn recheck(
        &self,
        login: &str,
        dn: &str,
        now: i64,
    ) -> Result<DirectoryUser, LdapError> {
        if !escape::acceptable_username(login) {
            return Err(LdapError::Rejected("username not acceptable".into()));
        }
        self.within(async {
            let mut lease = self.pool.lease().await?;
            let Some(found) = self.find(&mut lease, login).await? else {
                return Err(LdapError::Rejected(
                    "user no longer in the directory".into(),
                ));
            };
            if !found.dn.eq_ignore_ascii_case(dn) {
                return Err(LdapError::Rejected(
                    "the name now belongs to another entry".into(),
                ));
            }
            if let Some(why) = entry::disabled(&found, now) {
                return Err(LdapError::Rejected(why.into()));
            }
            self.user_of(&mut lease, &found).await
        })
        .await
    }

    /// The one entry `login` names, if exactly one.
    async fn find(
        &self,
        lease: &mut Lease<'_>,
        login: &str,
    ) -> Result<Option<SearchEntry>, LdapError> {
        let attrs = self.attributes();
        let found = match &self.cfg.user {
            UserLookup::Search {
                base,
                scope,
                filter,
            } => {
                let scope = match scope {
                    UserScope::Subtree => Scope::Subtree,
                    UserScope::OneLevel => Scope::OneLevel,
                };
                let filter = fill_filter(filter, login, "");
                lease.search(base, scope, &filter, &attrs, 1).await?
            }
            UserLookup::Dn(template) => {
                let dn = fill_dn(template, login);
                lease
                    .search(&dn, Scope::Base, "(objectClass=*)", &attrs, 1)
                    .await?
            }
        };
        if found.truncated {
            tracing::warn!(directory = %self.cfg.name, "the user filter matches more than one entry for a name; sign-in refused");
            return Err(LdapError::Rejected(
                "more than one entry has this name".into(),
            ));
        }
        Ok(found.entries.into_iter().next())
    }

    /// The account name and groups of a found entry.
    async fn user_of(
        &self,
        lease: &mut Lease<'_>,
        found: &SearchEntry,
    ) -> Result<DirectoryUser, LdapError> {
        let raw = entry::first(found, &self.cfg.username_attribute).ok_or_else(|| {
            LdapError::Rejected(format!(
                "the entry has no {} attribute",
                self.cfg.username_attribute
            ))
        })?;
        let username: Username = raw.to_lowercase().parse().map_err(|_| {
            LdapError::Rejected(format!(
                "directory name {:?} is not usable as a berth account name",
                raw.chars().take(64).collect::<String>()
            ))
        })?;
        let max = self.cfg.max_groups;
        let mut names: Vec<String> = Vec::new();
        if let Some(attr) = &self.cfg.group_attribute {
            names.extend(
                entry::values(found, attr).into_iter().filter_map(|dn| {
                    escape::group_name_from_dn(dn, &self.cfg.group_name_attribute)
                }),
            );
        }
        let mut cut = names.len() > max;
        if let Some(gs) = &self.cfg.group_search {
            let filter = fill_filter(&gs.filter, raw, &found.dn);
            let name_attr = self.cfg.group_name_attribute.as_str();
            let groups = lease
                .search(&gs.base, Scope::Subtree, &filter, &[name_attr], max)
                .await?;
            cut |= groups.truncated;
            names.extend(groups.entries.iter().filter_map(|g| {
                entry::first(g, name_attr)
                    .map(str::to_owned)
                    .or_else(|| escape::group_name_from_dn(&g.dn, name_attr))
            }));
        }
        let (groups, more) = entry::policy_groups(names, &self.cfg.groups_prefix, max);
        let groups_cut = cut || more;
        if groups_cut {
            tracing::warn!(directory = %self.cfg.name, user = %username, max, "user has more directory groups than max_groups; the rest are ignored");
        }
        Ok(DirectoryUser {
            dn: found.dn.clone(),
            username: username.as_str().to_owned(),
            groups,
            groups_cut,
        })
    }
}
