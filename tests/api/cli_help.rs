//! `--help` as a user reads it: no notes meant for developers, every flag of `serve` and
//! `simulate` with its environment variable, a default (or what unset means) and, for a
//! duration, its unit; value names that say what to give; each conflict named on both sides.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_callbot-facade");

/// `--help` of `subcommand`, as (flag line, its text) per option.
fn options(subcommand: &str) -> Vec<(String, String)> {
    let out = Command::new(BIN).args([subcommand, "--help"]).env_clear().output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut options: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with("--") || (trimmed.starts_with('-') && indent <= 2) {
            // Short help puts the text on the flag's line, after two spaces or more.
            let (flag, text) = trimmed.split_once("  ").unwrap_or((trimmed, ""));
            options.push((flag.to_owned(), format!("{}\n", text.trim())));
        } else if let Some((_, body)) = options.last_mut() {
            body.push_str(trimmed);
            body.push('\n');
        }
    }
    options.retain(|(flag, _)| !flag.starts_with("-h, --help") && !flag.starts_with("-V, --version"));
    options
}

#[test]
fn cli_help_texts_are_written_for_users() {
    for sub in ["serve", "simulate", "campaign", "scripts", "watch", "report", "sessions"] {
        let options = options(sub);
        assert!(!options.is_empty(), "{sub}");
        for (flag, text) in &options {
            let what = format!("{sub} {flag}:\n{text}");
            for internal in ["[`", "Settings::", "`None`", "Hidden", "tests "] {
                assert!(!text.contains(internal), "{what}: internal note {internal:?}");
            }
            // `<tls_cert>`: an argument id, not a value name.
            if let Some(value) = flag.split('<').nth(1) {
                assert!(!value.chars().any(|c| c.is_ascii_lowercase()), "{what}: value name");
            }
            if matches!(sub, "serve" | "simulate") {
                assert!(text.contains("[env: "), "{what}: no environment variable");
            }
            let takes_value = flag.contains('<');
            if takes_value {
                assert!(
                    text.contains("[default: ")
                        || text.contains("default:")
                        || text.contains("unset")
                        || text.contains("Required"),
                    "{what}: no default and nothing says what unset means"
                );
            }
            if flag.contains("<DURATION>") {
                assert!(text.contains("30s") || text.contains("1h"), "{what}: no unit");
            }
        }
    }
}

#[test]
fn cli_help_names_each_conflict_on_both_sides() {
    let serve = options("serve");
    let text_of = |name: &str| {
        serve
            .iter()
            .find(|(f, _)| f.starts_with(&format!("{name} ")) || f == name)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("{name} not in serve --help"))
    };
    for (a, b) in [
        ("--tenants-file", "--api-key"),
        ("--tenants-file", "--api-key-file"),
        ("--tenants-file", "--caller-tokens-file"),
        ("--tenants-file", "--allow-caller-api-key"),
        ("--api-key", "--api-key-file"),
    ] {
        assert!(text_of(a).contains(b), "{a} does not name {b}");
        assert!(text_of(b).contains(a), "{b} does not name {a}");
    }
    let campaign = options("campaign");
    let text = |name: &str| campaign.iter().find(|(f, _)| f.starts_with(&format!("{name} "))).unwrap().1.clone();
    assert!(text("--token").contains("--token-file") && text("--token-file").contains("--token"));
}
