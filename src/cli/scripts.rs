//! `callbot-facade scripts`: the tenant's scripts (`ListScripts`) as a table (id, name,
//! variables, `*` marking the ones each contact must fill) or as JSON.

use std::io::Write;

use serde_json::{Value, json};

use super::{CliError, connect};
use crate::{config::ScriptsArgs, pb};

/// Runs the command.
pub async fn run(args: ScriptsArgs) -> Result<(), CliError> {
    let mut client = connect(&args.server).await?;
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

/// A plain aligned table; widths in chars (Vietnamese text is mostly precomposed).
fn write_table(out: &mut impl Write, scripts: &[pb::Script]) -> std::io::Result<()> {
    let rows: Vec<[String; 3]> = scripts
        .iter()
        .map(|s| {
            let vars: Vec<String> = s
                .variables
                .iter()
                .map(|v| if v.is_dynamic_attribute { format!("{}*", v.field_code) } else { v.field_code.clone() })
                .collect();
            [s.id.clone(), s.name.clone(), vars.join(", ")]
        })
        .collect();
    let header = ["ID".to_owned(), "NAME".to_owned(), "VARIABLES".to_owned()];
    let width = |col: usize| rows.iter().chain([&header]).map(|r| r[col].chars().count()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    for row in [&header].into_iter().chain(&rows) {
        let pad = |text: &str, w: usize| format!("{text}{}", " ".repeat(w - text.chars().count()));
        writeln!(out, "{}  {}  {}", pad(&row[0], w0), pad(&row[1], w1), row[2])?;
    }
    writeln!(out, "{} script(s); * = each contact must fill it (is_dynamic_attribute)", rows.len())
}
