//! `callbot-facade scripts`: the tenant's scripts (`ListScripts`) as a table (id, name,
//! variables, `*` marking the ones each contact must fill) or as JSON.

use std::io::Write;

use comfy_table::{Table, TableComponent};
use serde_json::{Value, json};

use super::{CliError, connect};
use crate::{config::ScriptsArgs, pb};

/// Runs the command.
pub async fn run(args: ScriptsArgs) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    let mut stream = client
        .list_scripts(pb::ListScriptsRequest { name_contains: args.name_contains.clone() })
        .await
        .map_err(CliError::Rpc)?
        .into_inner();
    let mut scripts = Vec::new();
    while let Some(m) = stream.message().await.map_err(CliError::Rpc)? {
        scripts.extend(m.script);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = Value::Array(scripts.iter().map(script_json).collect());
        writeln!(out, "{}", serde_json::to_string_pretty(&value).unwrap_or_default())?;
    } else {
        write_table(&mut out, &scripts)?;
    }
    Ok(())
}

/// One script as JSON, field names as in the proto.
fn script_json(s: &pb::Script) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "variables": s.variables.iter().map(|v| json!({
            "field_code": v.field_code,
            "field_name": v.field_name,
            "field_value": v.field_value,
            "field_type": v.field_type,
            "type": v.r#type,
            "is_dynamic_attribute": v.is_dynamic_attribute,
        })).collect::<Vec<_>>(),
    })
}

/// An aligned table, columns sized by display width (precomposed or combining Vietnamese,
/// wide characters and emoji all line up), two spaces between columns, no borders.
fn write_table(out: &mut impl Write, scripts: &[pb::Script]) -> std::io::Result<()> {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    for component in TableComponent::iter() {
        table.remove_style(component);
    }
    table.set_header(["ID", "NAME", "VARIABLES"]);
    for s in scripts {
        let vars: Vec<String> = s
            .variables
            .iter()
            .map(|v| if v.is_dynamic_attribute { format!("{}*", v.field_code) } else { v.field_code.clone() })
            .collect();
        table.add_row([s.id.as_str(), s.name.as_str(), vars.join(", ").as_str()]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    for line in table.lines() {
        writeln!(out, "{}", super::inert(line.trim_end()))?;
    }
    writeln!(out, "{} script(s); * = each contact must fill it (is_dynamic_attribute)", scripts.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(id: &str, name: &str, var: &str) -> pb::Script {
        pb::Script {
            id: id.into(),
            name: name.into(),
            variables: vec![pb::ScriptVariable {
                field_code: var.into(),
                is_dynamic_attribute: true,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn columns_line_up_by_display_width() {
        // Precomposed, decomposed (combining marks) and wide (emoji) names of different char counts.
        let scripts = [
            script("a1", "Th\u{00f4}ng b\u{00e1}o", "x"),
            script("b22", "Tho\u{0302}ng ba\u{0301}o", "y"),
            script("c3", "\u{1f4de} g\u{1ecd}i", "z"),
        ];
        let mut out = Vec::new();
        write_table(&mut out, &scripts).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("ID   NAME"), "{text}");
        // The VARIABLES column starts at the same display column on every line.
        let column = |line: &str, needle: &str| {
            let at = line.find(needle).unwrap_or_else(|| panic!("{needle} in {line}"));
            unicode_width::UnicodeWidthStr::width(&line[..at])
        };
        let want = column(lines[0], "VARIABLES");
        for (line, var) in lines[1..4].iter().zip(["x*", "y*", "z*"]) {
            assert_eq!(column(line, var), want, "{text}");
        }
        assert_eq!(lines[4], "3 script(s); * = each contact must fill it (is_dynamic_attribute)");
    }
}
