//! Users and groups of the image, read from its /etc/passwd and /etc/group
//! directly: the init is statically linked, and static glibc's getpwnam
//! needs NSS modules the image may not have. Numbers work without the files.

use crate::image_paths::AppSpec;
use crate::manifest::UserOrId;
use std::path::Path;

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The accounts of an image root (empty when it has no such files).
pub struct Accounts {
    users: Vec<PasswdEntry>,
    groups: Vec<GroupEntry>,
}

/// Who the app runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the spec's, plus the groups of /etc/group that
    /// list the user (what `initgroups` would give).
    pub groups: Vec<u32>,
    pub home: Option<String>,
}

impl Accounts {
    pub fn read(root: &Path) -> Accounts {
        let read =
            |name: &str| std::fs::read_to_string(root.join("etc").join(name)).unwrap_or_default();
        Accounts::parse(&read("passwd"), &read("group"))
    }

    fn parse(passwd: &str, group: &str) -> Accounts {
        let fields = |line: &str| -> Vec<String> { line.split(':').map(str::to_string).collect() };
        let users = passwd
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(fields)
            .filter_map(|f| {
                Some(PasswdEntry {
                    uid: f.get(2)?.parse().ok()?,
                    gid: f.get(3)?.parse().ok()?,
                    home: f.get(5).cloned().unwrap_or_default(),
                    name: f[0].clone(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(fields)
            .filter_map(|f| {
                let members = f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                Some(GroupEntry {
                    gid: f.get(2)?.parse().ok()?,
                    members,
                    name: f[0].clone(),
                })
            })
            .collect();
        Accounts { users, groups }
    }

    pub fn uid(&self, user: &UserOrId) -> Result<u32, String> {
        match user {
            UserOrId::Id(id) => Ok(*id),
            UserOrId::Name(name) => self.user(name).map(|u| u.uid),
        }
    }

    pub fn gid(&self, group: &UserOrId) -> Result<u32, String> {
        match group {
            UserOrId::Id(id) => Ok(*id),
            UserOrId::Name(name) => self.group(name),
        }
    }

    fn user(&self, name: &str) -> Result<&PasswdEntry, String> {
        self.users.iter().find(|u| u.name == name).ok_or_else(|| {
            format!(
                "user `{name}` is not in the image's /etc/passwd (use a number, or add the user)"
            )
        })
    }

    fn group(&self, name: &str) -> Result<u32, String> {
        match name.parse() {
            Ok(id) => Ok(id),
            Err(_) => self
                .groups
                .iter()
                .find(|g| g.name == name)
                .map(|g| g.gid)
                .ok_or_else(|| format!("group `{name}` is not in the image's /etc/group (use a number, or add the group)")),
        }
    }

    /// The identity `spec` names; `None` when it names none (the app then
    /// runs as the init does, root).
    pub fn identity(&self, spec: &AppSpec) -> Result<Option<Identity>, String> {
        if spec.user.is_none() && spec.group.is_none() && spec.supplementary_gids.is_empty() {
            return Ok(None);
        }
        let entry = match &spec.user {
            None => None,
            Some(user) => match user.parse::<u32>() {
                Ok(uid) => self.users.iter().find(|u| u.uid == uid),
                Err(_) => Some(self.user(user)?),
            },
        };
        let uid = match (&spec.user, entry) {
            (_, Some(entry)) => entry.uid,
            (Some(user), None) => user.parse().unwrap_or(0),
            (None, None) => 0,
        };
        let gid = match &spec.group {
            Some(group) => self.group(group)?,
            None => entry.map_or(0, |e| e.gid),
        };
        let mut groups = spec.supplementary_gids.clone();
        if let Some(entry) = entry {
            groups.extend(
                self.groups
                    .iter()
                    .filter(|g| g.members.contains(&entry.name))
                    .map(|g| g.gid),
            );
        }
        groups.sort_unstable();
        groups.dedup();
        Ok(Some(Identity {
            uid,
            gid,
            groups,
            home: entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001:App:/home/app:/bin/sh\nbroken line\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nwheel:x:10:root,app\naudio:x:29:other\n";

    fn spec(user: Option<&str>, group: Option<&str>, gids: &[u32]) -> AppSpec {
        AppSpec {
            user: user.map(Into::into),
            group: group.map(Into::into),
            supplementary_gids: gids.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn names_resolve_from_the_image_files() {
        let accounts = Accounts::parse(PASSWD, GROUP);
        let identity = accounts
            .identity(&spec(Some("app"), None, &[5]))
            .unwrap()
            .unwrap();
        assert_eq!(
            identity,
            Identity {
                uid: 1000,
                gid: 1001,
                groups: vec![5, 10],
                home: Some("/home/app".into())
            }
        );
        let identity = accounts
            .identity(&spec(Some("app"), Some("audio"), &[]))
            .unwrap()
            .unwrap();
        assert_eq!((identity.uid, identity.gid), (1000, 29));
        assert!(
            accounts
                .identity(&spec(Some("nobody"), None, &[]))
                .unwrap_err()
                .contains("`nobody` is not in the image's /etc/passwd")
        );
        assert!(
            accounts
                .identity(&spec(None, Some("staff"), &[]))
                .unwrap_err()
                .contains("/etc/group")
        );
        assert_eq!(accounts.identity(&spec(None, None, &[])).unwrap(), None);
    }

    #[test]
    fn numbers_work_without_files() {
        let accounts = Accounts::parse("", "");
        let identity = accounts
            .identity(&spec(Some("4242"), Some("4343"), &[7]))
            .unwrap()
            .unwrap();
        assert_eq!(
            identity,
            Identity {
                uid: 4242,
                gid: 4343,
                groups: vec![7],
                home: None
            }
        );
        assert_eq!(accounts.uid(&UserOrId::Id(3)).unwrap(), 3);
        // A number known to passwd takes its primary group.
        let identity = Accounts::parse(PASSWD, GROUP)
            .identity(&spec(Some("1000"), None, &[]))
            .unwrap()
            .unwrap();
        assert_eq!(identity.gid, 1001);
    }
}
