//! A private OpenLDAP server for the directory tests: its own `slapd.conf`,
//! database, TLS certificates (from a test CA made here) and loopback ports,
//! started in the foreground and stopped on drop. Never the system service.
//!
//! The tree (suffix `dc=berth,dc=test`):
//! - `ou=people`: inetOrgPerson users with passwords `<uid>-dir-Secret-1`;
//!   groups reach them through the `memberof` overlay (groupOfNames) or through a
//!   group search (posixGroup `memberUid`, groupOfUniqueNames);
//! - `ou=corp`: Active Directory-style users and groups (the test schema below:
//!   `sAMAccountName`, `userAccountControl`, `accountExpires`, classes `user`
//!   and `group`);
//! - `cn=berth,ou=services`: the service account berth binds as.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::proc::{restart_port, run, Daemon, Out};

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const SUFFIX: &str = "dc=berth,dc=test";
pub const ROOT_DN: &str = "cn=root,dc=berth,dc=test";
pub const ROOT_PW: &str = "root-Secret-1";
pub const SERVICE_DN: &str = "cn=berth,ou=services,dc=berth,dc=test";
pub const SERVICE_PW: &str = "svc-Very-Secret-7f3a";

/// The password every seeded directory user has.
pub fn dir_password(uid: &str) -> String {
    format!("{uid}-dir-Secret-1")
}

/// Test-only Active Directory-style schema (experimental OID arc).
const AD_SCHEMA: &str = r#"
attributetype ( 1.3.6.1.4.1.4203.666.11.99.1 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.11.99.2 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.11.99.3 NAME 'accountExpires'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.4203.666.11.99.4 NAME 'user' SUP top AUXILIARY
  MAY ( sAMAccountName $ userAccountControl $ accountExpires ) )
objectclass ( 1.3.6.1.4.1.4203.666.11.99.5 NAME 'group' SUP top AUXILIARY
  MAY ( sAMAccountName ) )
"#;

/// TLS material: a test CA and a server certificate signed by it.
pub struct Pki {
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

/// Makes a CA and a server certificate for `names` (DNS names or IP literals).
pub fn make_pki(dir: &Path, names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "berth test directory CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("server key");
    let mut params =
        CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("x"));
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("server cert");
    let pki = Pki {
        ca_pem: dir.join("ca.pem"),
        cert_pem: dir.join("server.pem"),
        key_pem: dir.join("server.key"),
    };
    std::fs::write(&pki.ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert_pem, cert.pem()).unwrap();
    std::fs::write(&pki.key_pem, key.serialize_pem()).unwrap();
    pki
}

/// What to put in the tree besides the standard users.
#[derive(Default, Clone)]
pub struct Seed {
    /// Groups (groupOfUniqueNames, found by group search) the user `many` is in.
    pub bulk_groups: usize,
    /// A referral entry `uid=referred` pointing at this address.
    pub referral_to: Option<String>,
}

pub struct Slapd {
    daemon: Option<Daemon>,
    restarts: usize,
    pub port: u16,
    pub ldaps_port: u16,
    pub pki: Pki,
    pub dir: tempfile::TempDir,
}

fn entry(out: &mut String, dn: &str, lines: &[String]) {
    let _ = writeln!(out, "dn: {dn}");
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    out.push('\n');
}

fn person(out: &mut String, ou: &str, uid: &str, extra: &[String]) {
    // All values of an attribute together: slapadd wants them adjacent.
    let mut lines = vec!["objectClass: inetOrgPerson".to_owned()];
    lines.extend(
        extra
            .iter()
            .filter(|l| l.starts_with("objectClass:"))
            .cloned(),
    );
    lines.extend([
        format!("uid: {uid}"),
        format!("cn: {uid}"),
        format!("sn: {uid}"),
        format!("userPassword: {}", dir_password(uid)),
    ]);
    lines.extend(
        extra
            .iter()
            .filter(|l| !l.starts_with("objectClass:"))
            .cloned(),
    );
    entry(out, &format!("uid={uid},ou={ou},{SUFFIX}"), &lines);
}

/// Entries loaded offline with slapadd (no overlay runs then).
fn base_ldif(seed: &Seed) -> String {
    let mut s = String::new();
    entry(
        &mut s,
        SUFFIX,
        &[
            "objectClass: dcObject".into(),
            "objectClass: organization".into(),
            "dc: berth".into(),
            "o: berth test".into(),
        ],
    );
    for ou in ["people", "groups", "services", "corp"] {
        entry(
            &mut s,
            &format!("ou={ou},{SUFFIX}"),
            &[
                "objectClass: organizationalUnit".into(),
                format!("ou: {ou}"),
            ],
        );
    }
    entry(
        &mut s,
        SERVICE_DN,
        &[
            "objectClass: organizationalRole".into(),
            "objectClass: simpleSecurityObject".into(),
            "cn: berth".into(),
            format!("userPassword: {SERVICE_PW}"),
        ],
    );
    for uid in ["alice", "bob", "carol", "localuser", "many", "frank"] {
        person(&mut s, "people", uid, &[]);
    }
    // Switched off the AD way, expired the POSIX way.
    person(
        &mut s,
        "people",
        "dave",
        &["objectClass: user".into(), "userAccountControl: 514".into()],
    );
    person(
        &mut s,
        "people",
        "erin",
        &[
            "objectClass: shadowAccount".into(),
            "shadowExpire: 1".into(),
        ],
    );
    // Names with DN and filter specials, matched literally.
    entry(
        &mut s,
        &format!("uid=smith\\2c john,ou=people,{SUFFIX}"),
        &[
            "objectClass: inetOrgPerson".into(),
            "uid: smith, john".into(),
            "cn: smith".into(),
            "sn: smith".into(),
            format!("userPassword: {}", dir_password("smith")),
        ],
    );
    // bob's team comes from a group search (posixGroup memberUid).
    entry(
        &mut s,
        &format!("cn=team-b,ou=groups,{SUFFIX}"),
        &[
            "objectClass: posixGroup".into(),
            "cn: team-b".into(),
            "gidNumber: 2002".into(),
            "memberUid: bob".into(),
        ],
    );
    // Active Directory style, under ou=corp.
    for (sam, uac) in [("Grace", 512), ("Heidi", 514), ("Ivan", 512)] {
        let mut lines = vec![
            "objectClass: inetOrgPerson".to_owned(),
            "objectClass: user".to_owned(),
            format!("cn: {sam}"),
            format!("sn: {sam}"),
            format!("sAMAccountName: {sam}"),
            format!("userAccountControl: {uac}"),
            format!("userPassword: {}", dir_password(&sam.to_lowercase())),
        ];
        if sam == "Ivan" {
            // Expired in 2001 (100 ns ticks since 1601).
            lines.push("accountExpires: 126227808000000000".into());
        }
        entry(&mut s, &format!("cn={sam},ou=corp,{SUFFIX}"), &lines);
    }
    for i in 0..seed.bulk_groups {
        entry(
            &mut s,
            &format!("cn=bulk-{i:05},ou=groups,{SUFFIX}"),
            &[
                "objectClass: groupOfUniqueNames".into(),
                format!("cn: bulk-{i:05}"),
                format!("uniqueMember: uid=many,ou=people,{SUFFIX}"),
            ],
        );
    }
    if let Some(addr) = &seed.referral_to {
        entry(
            &mut s,
            &format!("uid=referred,ou=people,{SUFFIX}"),
            &[
                "objectClass: referral".into(),
                "objectClass: extensibleObject".into(),
                "uid: referred".into(),
                format!("ref: ldap://{addr}/uid=referred,dc=elsewhere"),
            ],
        );
    }
    s
}

/// Groups added online, so the memberof overlay writes `memberOf`.
fn member_of_ldif() -> String {
    let mut s = String::new();
    let group = |s: &mut String, ou: &str, cn: &str, members: &[&str], extra: &[&str]| {
        let mut lines = vec!["objectClass: groupOfNames".to_owned(), format!("cn: {cn}")];
        lines.extend(extra.iter().map(|e| (*e).to_owned()));
        lines.extend(members.iter().map(|m| format!("member: {m},{SUFFIX}")));
        entry(s, &format!("cn={cn},ou={ou},{SUFFIX}"), &lines);
    };
    // Two members, so a test can take alice out (groupOfNames needs one).
    group(
        &mut s,
        "groups",
        "team-a",
        &["uid=alice,ou=people", "cn=berth,ou=services"],
        &[],
    );
    // Named like berth's local administrators' group.
    group(&mut s, "groups", "admins", &["uid=carol,ou=people"], &[]);
    group(
        &mut s,
        "groups",
        "registry-admins",
        &["uid=frank,ou=people"],
        &[],
    );
    group(
        &mut s,
        "corp",
        "Registry Pushers",
        &["cn=Grace,ou=corp", "cn=Heidi,ou=corp"],
        &["objectClass: group"],
    );
    group(
        &mut s,
        "corp",
        "team-corp",
        &["cn=Grace,ou=corp"],
        &["objectClass: group"],
    );
    s
}

fn config(dir: &Path, pki: &Pki) -> String {
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include {dir}/ad-test.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
sizelimit 20000
database mdb
maxsize 268435456
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {dir}/data
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
access to attrs=userPassword by self write by anonymous auth by * none
access to * by dn.exact="{SERVICE_DN}" read by self read by anonymous auth by * none
"#,
        dir = dir.display(),
        ca = pki.ca_pem.display(),
        cert = pki.cert_pem.display(),
        key = pki.key_pem.display(),
    )
}

impl Slapd {
    /// Starts slapd with the standard tree plus `seed`, its certificate made
    /// out for `cert_names`.
    pub fn start(seed: &Seed, cert_names: &[&str]) -> Slapd {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-slapd.")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(d.join("ad-test.schema"), AD_SCHEMA).unwrap();
        let pki = make_pki(d, cert_names);
        std::fs::write(d.join("slapd.conf"), config(d, &pki)).unwrap();
        std::fs::write(d.join("base.ldif"), base_ldif(seed)).unwrap();
        let out = run(
            Command::new("/usr/sbin/slapadd")
                .arg("-q")
                .arg("-f")
                .arg(d.join("slapd.conf"))
                .arg("-l")
                .arg(d.join("base.ldif")),
            None,
            Duration::from_secs(300),
        );
        assert!(out.success(), "slapadd failed:\n{out}");
        let mut s = Slapd {
            daemon: None,
            restarts: 0,
            // slapd restarts on these ports in the outage test.
            port: restart_port(),
            ldaps_port: restart_port(),
            pki,
            dir,
        };
        s.run_daemon();
        let path = s.dir.path().join("groups.ldif");
        std::fs::write(&path, member_of_ldif()).unwrap();
        let out = s.ldap_tool("ldapadd", &["-f", path.to_str().unwrap()], None);
        assert!(
            out.success(),
            "seeding groups failed:\n{out}\n{}",
            s.log_tail(30)
        );
        s
    }

    fn run_daemon(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new(SLAPD);
        cmd.arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
                self.port, self.ldaps_port
            ))
            // Foreground, with the operation log (binds, searches, results).
            .args(["-d", "256"]);
        let name = format!("slapd-{}", self.restarts);
        self.restarts += 1;
        self.daemon = Some(Daemon::spawn(&name, cmd, d, Duration::from_secs(10)));
        let start = Instant::now();
        loop {
            if let Some(st) = self.daemon.as_mut().and_then(Daemon::exited) {
                panic!("slapd exited during start-up ({st})\n{}", self.log_tail(40));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "slapd did not listen on {} within 30 s\n{}",
                self.port,
                self.log_tail(40)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops slapd (SIGTERM, waits); the data stays for [`Slapd::restart`].
    pub fn stop(&mut self) {
        self.daemon = None;
    }

    /// Starts slapd again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run_daemon();
    }

    /// Freezes slapd (SIGSTOP): connections are accepted, nothing is answered.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Undoes [`Slapd::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join("slapd.pid")).expect("slapd.pid");
        let out = run(
            Command::new("kill").arg(format!("-{sig}")).arg(pid.trim()),
            None,
            Duration::from_secs(10),
        );
        assert!(out.success(), "{out}");
    }

    /// `ldap://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT`
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// Runs an OpenLDAP client tool as the root DN (plain LDAP on loopback).
    pub fn ldap_tool(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = Command::new(tool);
        cmd.args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW])
            .args(args);
        run(&mut cmd, stdin, Duration::from_secs(60))
    }

    /// Applies an LDIF change as the root DN.
    pub fn modify(&self, ldif: &str) {
        let out = self.ldap_tool("ldapmodify", &[], Some(ldif));
        assert!(
            out.success(),
            "ldapmodify failed:\n{out}\n{}",
            self.log_tail(20)
        );
    }

    /// Everything every slapd run logged so far.
    pub fn log(&self) -> String {
        (0..self.restarts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("slapd-{i}.stderr.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Simple binds slapd saw for `dn` so far.
    pub fn binds_for(&self, dn: &str) -> usize {
        let needle = format!("BIND dn=\"{dn}\" method=128").to_lowercase();
        self.log()
            .lines()
            .filter(|l| l.to_lowercase().contains(&needle))
            .count()
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.log_tail(n))
            .unwrap_or_else(|| "(slapd stopped)\n".to_owned())
    }
}
