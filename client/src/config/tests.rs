use super::*;
use std::fs;

fn item(json: &str) -> ConfigItem {
    ConfigItem::from_json(json).unwrap()
}

fn every_provider(monitor_only: bool) -> ConfigItem {
    item(&format!(
        r#"{{"name":"baseline","version":1,"monitor_only":{monitor_only},"restore_on_removal":true,"settings":[
        {{"name":"root-login","target":{{"provider":"ini","path":"etc/ssh/dm.ini","section":"sshd","key":"PermitRootLogin"}},"value":"no"}},
        {{"name":"log-level","target":{{"provider":"json","path":"etc/app/config.json","pointer":"/log/level"}},"type":"integer","value":3,"rule":"at-least"}},
        {{"name":"motd","target":{{"provider":"file","path":"etc/motd","mode":"0640"}},"value":"managed by dm\n"}},
        {{"name":"mp-host","target":{{"provider":"line","path":"etc/hosts","line":"10.0.0.1 mp"}},"value":true}},
        {{"name":"ssh","target":{{"provider":"systemd","unit":"ssh.service"}},"value":true}},
        {{"name":"forwarding","target":{{"provider":"sysctl","key":"net.ipv4.ip_forward"}},"value":"0"}},
        {{"name":"api-key","target":{{"provider":"ini","path":"etc/app/secret.ini","key":"ApiKey"}},"value":"s3cret","secret":true}}
    ]}}"#
    ))
}

fn device() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    fs::create_dir_all(r.join("etc/ssh")).unwrap();
    fs::write(r.join("etc/ssh/dm.ini"), "; by hand\n[sshd]\nPermitRootLogin = yes\nPort=22\n")
        .unwrap();
    fs::create_dir_all(r.join("etc/app")).unwrap();
    fs::write(r.join("etc/app/config.json"), r#"{"name":"app","log":{"level":1,"file":"x"}}"#)
        .unwrap();
    fs::write(r.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::create_dir_all(r.join("lib/systemd/system")).unwrap();
    fs::write(
        r.join("lib/systemd/system/ssh.service"),
        "[Unit]\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    fs::create_dir_all(r.join("proc/sys/net/ipv4")).unwrap();
    fs::write(r.join("proc/sys/net/ipv4/ip_forward"), "1\n").unwrap();
    d
}

fn platform() -> Platform {
    Platform::current()
}

#[test]
fn every_provider_is_applied_then_compliant_and_restored() {
    let d = device();
    let r = d.path();
    let i = every_provider(false);
    let (res, replaced) = enforce_item(r, &i, &platform());
    assert_eq!(res.state, State::Remediated, "{res:#?}");
    assert!(res.settings.iter().all(|s| s.state == State::Remediated), "{res:#?}");
    assert_eq!(
        fs::read_to_string(r.join("etc/ssh/dm.ini")).unwrap(),
        "; by hand\n[sshd]\nPermitRootLogin = no\nPort=22\n"
    );
    let json: Value =
        serde_json::from_str(&fs::read_to_string(r.join("etc/app/config.json")).unwrap()).unwrap();
    assert_eq!(json.to_string(), r#"{"name":"app","log":{"level":3,"file":"x"}}"#);
    assert_eq!(fs::read_to_string(r.join("etc/motd")).unwrap(), "managed by dm\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(r.join("etc/motd")).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(
        fs::read_to_string(r.join("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n10.0.0.1 mp\n"
    );
    let link = r.join("etc/systemd/system/multi-user.target.wants/ssh.service");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("/lib/systemd/system/ssh.service"));
    assert_eq!(fs::read_to_string(r.join("proc/sys/net/ipv4/ip_forward")).unwrap(), "0\n");
    assert!(
        fs::read_to_string(r.join("etc/sysctl.d/60-dm-net.ipv4.ip_forward.conf"))
            .unwrap()
            .contains("net.ipv4.ip_forward = 0")
    );
    // The secret's value is never shown; the others say what was there.
    let secret = res.settings.iter().find(|s| s.name == "api-key").unwrap();
    assert_eq!((secret.actual.as_deref(), secret.expected.as_str()), (None, "(secret)"));
    let root_login = res.settings.iter().find(|s| s.name == "root-login").unwrap();
    assert_eq!(root_login.actual.as_deref(), Some("yes"));

    // Applying again changes nothing.
    let (again, more) = enforce_item(r, &i, &platform());
    assert_eq!(again.state, State::Compliant, "{again:#?}");
    assert!(more.is_empty());

    // Removal puts back what was there, absent things included.
    assert!(restore(r, &i, &replaced).is_empty());
    assert_eq!(
        fs::read_to_string(r.join("etc/ssh/dm.ini")).unwrap(),
        "; by hand\n[sshd]\nPermitRootLogin = yes\nPort=22\n"
    );
    assert!(!r.join("etc/motd").exists());
    assert!(
        !r.join("etc/app/secret.ini").exists()
            || fs::read_to_string(r.join("etc/app/secret.ini")).unwrap().trim().is_empty()
    );
    assert_eq!(fs::read_to_string(r.join("etc/hosts")).unwrap(), "127.0.0.1 localhost\n");
    assert!(fs::symlink_metadata(&link).is_err());
    assert!(!r.join("etc/sysctl.d/60-dm-net.ipv4.ip_forward.conf").exists());
}

#[test]
fn drift_is_put_back_unless_the_item_only_monitors() {
    let d = device();
    let r = d.path();
    enforce_item(r, &every_provider(false), &platform());
    fs::write(r.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let (res, _) = enforce_item(r, &every_provider(false), &platform());
    let hosts = res.settings.iter().find(|s| s.name == "mp-host").unwrap();
    assert_eq!((hosts.state, hosts.actual.as_deref()), (State::Remediated, Some("false")));
    assert!(fs::read_to_string(r.join("etc/hosts")).unwrap().contains("10.0.0.1 mp"));

    fs::write(r.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let (res, replaced) = enforce_item(r, &every_provider(true), &platform());
    assert_eq!(res.state, State::NonCompliant);
    assert!(replaced.is_empty());
    assert_eq!(fs::read_to_string(r.join("etc/hosts")).unwrap(), "127.0.0.1 localhost\n");
}

#[test]
fn a_bad_setting_is_its_own_error_and_the_others_still_apply() {
    let d = device();
    let r = d.path();
    fs::write(r.join("etc/app/config.json"), "{ not json").unwrap();
    fs::write(r.join("etc/app/numbers.json"), r#"{"log": 5}"#).unwrap();
    fs::write(r.join("etc/not-a-dir"), "x").unwrap();
    let i = item(
        r#"{"name":"mixed","version":2,"settings":[
        {"name":"broken-json","target":{"provider":"json","path":"etc/app/config.json","pointer":"/log/level"},"value":"x"},
        {"name":"through-a-number","target":{"provider":"json","path":"etc/app/numbers.json","pointer":"/log/level"},"value":"x"},
        {"name":"under-a-file","target":{"provider":"file","path":"etc/not-a-dir/f"},"value":"x"},
        {"name":"fine","target":{"provider":"line","path":"etc/hosts","line":"10.0.0.9 other"},"value":true}
    ]}"#,
    );
    let (res, _) = enforce_item(r, &i, &platform());
    let state = |n: &str| res.settings.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!(res.state, State::Error);
    assert!(state("broken-json").reason.unwrap().contains("is not valid JSON"));
    assert!(state("through-a-number").reason.unwrap().contains("neither an object nor a list"));
    assert_eq!(state("under-a-file").state, State::Error);
    assert_eq!(state("fine").state, State::Remediated);
    assert_eq!(
        fs::read_to_string(r.join("etc/app/config.json")).unwrap(),
        "{ not json",
        "never half-written"
    );
}

#[test]
fn other_platforms_items_are_not_applicable_and_rules_compare_as_typed() {
    let d = device();
    let other = item(
        r#"{"name":"arm-only","version":1,"platforms":["linux-nosuch"],"settings":[
        {"name":"motd","target":{"provider":"file","path":"etc/motd"},"value":"x"}]}"#,
    );
    let (res, _) = enforce_item(d.path(), &other, &platform());
    assert_eq!(res.state, State::NotApplicable);
    assert!(!d.path().join("etc/motd").exists());

    let s = |rule: &str, kind: &str, value: &str| -> Setting {
        item(&format!(
            r#"{{"name":"r","version":1,"settings":[{{"name":"s","target":{{"provider":"ini","path":"a.ini","key":"k"}},"type":"{kind}","rule":"{rule}","value":{value}}}]}}"#
        ))
        .settings
        .remove(0)
    };
    let text = |t: &str| Some(Value::String(t.into()));
    assert!(complies(&s("at-least", "integer", "3"), text("10").as_ref()));
    assert!(!complies(&s("at-least", "integer", "3"), text("2").as_ref()));
    assert!(complies(&s("at-most", "integer", "3"), text(" 3 ").as_ref()));
    assert!(complies(&s("one-of", "string", r#"["a","b"]"#), text("b").as_ref()));
    assert!(complies(
        &s("matches", "string", r#""*.example.com""#),
        text("mp.example.com").as_ref()
    ));
    assert!(complies(&s("equals", "boolean", "true"), text("yes").as_ref()));
    assert!(complies(&s("equals", "list", r#"["a","b"]"#), text("a, b").as_ref()));
    assert!(!complies(&s("equals", "string", r#""a""#), None));
    assert_eq!(to_apply(&s("one-of", "string", r#"["a","b"]"#)), Some(Value::from("a")));
    assert_eq!(to_apply(&s("matches", "string", r#""*""#)), None);
}

#[test]
fn a_whole_file_complies_by_content_mode_and_owner() {
    use std::os::unix::fs::PermissionsExt;
    let d = device();
    let r = d.path();
    fs::write(r.join("etc/motd"), "managed\n").unwrap();
    fs::set_permissions(r.join("etc/motd"), fs::Permissions::from_mode(0o600)).unwrap();
    let uid = rustix::process::geteuid().as_raw();
    let i = item(&format!(
        r#"{{"name":"motd","version":1,"restore_on_removal":true,"settings":[
        {{"name":"motd","target":{{"provider":"file","path":"etc/motd","mode":"0640","owner":{uid}}},"value":"managed\n"}}]}}"#
    ));
    let (res, replaced) = enforce_item(r, &i, &platform());
    assert_eq!(res.settings[0].state, State::Remediated, "right content, wrong mode: {res:#?}");
    assert_eq!(res.settings[0].actual.as_deref(), Some("managed\n (mode 0600)"));
    assert_eq!(fs::metadata(r.join("etc/motd")).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(enforce_item(r, &i, &platform()).0.state, State::Compliant);
    assert!(restore(r, &i, &replaced).is_empty());
    assert_eq!(fs::read_to_string(r.join("etc/motd")).unwrap(), "managed\n");
    assert_eq!(fs::metadata(r.join("etc/motd")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn an_edited_file_keeps_its_owner_and_a_new_secret_file_is_private() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = device();
    let r = d.path();
    let ini = r.join("etc/ssh/dm.ini");
    rustix::fs::chown(
        &ini,
        Some(rustix::fs::Uid::from_raw(1234)),
        Some(rustix::fs::Gid::from_raw(4321)),
    )
    .unwrap();
    let (res, _) = enforce_item(r, &every_provider(false), &platform());
    assert_eq!(res.state, State::Remediated);
    let m = fs::metadata(&ini).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 4321), "the service's own file stays its own");
    let secret = fs::metadata(r.join("etc/app/secret.ini")).unwrap();
    assert_eq!(secret.permissions().mode() & 0o777, 0o600);
}
