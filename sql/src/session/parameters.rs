//! Session parameters: their names, defaults and checks for SET, SHOW and RESET, and which
//! changes clients are told of. Unknown names are rejected with 42704 as in Postgres.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use datafusion::sql::sqlparser::ast;

use crate::error::SqlError;

/// A session's values, by lower-cased canonical name (a missing one has its default).
pub(crate) type Values = BTreeMap<String, String>;

/// A known parameter: its canonical name, default, whether changes are reported to the client.
struct Param {
    name: &'static str,
    default: &'static str,
    reported: bool,
}

const PARAMS: &[Param] = &[
    Param {
        name: "application_name",
        default: "",
        reported: true,
    },
    Param {
        name: "client_encoding",
        default: "UTF8",
        reported: true,
    },
    Param {
        name: "DateStyle",
        default: "ISO, MDY",
        reported: true,
    },
    Param {
        name: "IntervalStyle",
        default: "postgres",
        reported: true,
    },
    Param {
        name: "TimeZone",
        default: "UTC",
        reported: true,
    },
    Param {
        name: "standard_conforming_strings",
        default: "on",
        reported: true,
    },
    Param {
        name: "integer_datetimes",
        default: "on",
        reported: true,
    },
    Param {
        name: "server_version",
        default: crate::SERVER_VERSION,
        reported: false,
    },
    Param {
        name: "server_encoding",
        default: "UTF8",
        reported: false,
    },
    // Limits Postgres was built with, which drivers read (pgjdbc's getImportedKeys asks
    // max_index_keys).
    Param {
        name: "max_index_keys",
        default: "32",
        reported: false,
    },
    Param {
        name: "max_identifier_length",
        default: "63",
        reported: false,
    },
    Param {
        name: "search_path",
        default: "\"$user\", public",
        reported: false,
    },
    Param {
        name: "transaction_isolation",
        default: "read committed",
        reported: false,
    },
    Param {
        name: "default_transaction_isolation",
        default: "read committed",
        reported: false,
    },
    Param {
        name: "transaction_read_only",
        default: "off",
        reported: false,
    },
    Param {
        name: "default_transaction_read_only",
        default: "off",
        reported: false,
    },
    Param {
        name: "extra_float_digits",
        default: "1",
        reported: false,
    },
    Param {
        name: "statement_timeout",
        default: "0",
        reported: false,
    },
    Param {
        name: "lock_timeout",
        default: "0",
        reported: false,
    },
    Param {
        name: "idle_in_transaction_session_timeout",
        default: "0",
        reported: false,
    },
    Param {
        name: "bytea_output",
        default: "hex",
        reported: false,
    },
    Param {
        name: "max_identifier_length",
        default: "63",
        reported: false,
    },
    Param {
        name: "lc_messages",
        default: "C",
        reported: false,
    },
    Param {
        name: "lc_monetary",
        default: "C",
        reported: false,
    },
    Param {
        name: "lc_numeric",
        default: "C",
        reported: false,
    },
    Param {
        name: "lc_time",
        default: "C",
        reported: false,
    },
    Param {
        name: "client_min_messages",
        default: "notice",
        reported: false,
    },
    Param {
        name: "row_security",
        default: "on",
        reported: false,
    },
    Param {
        name: "jit",
        default: "off",
        reported: false,
    },
    Param {
        name: "is_superuser",
        default: "on",
        reported: true,
    },
    Param {
        name: "session_authorization",
        default: "weir",
        reported: true,
    },
    Param {
        name: "implicit_flush",
        default: "off",
        reported: false,
    },
    Param {
        name: "streaming_parallelism",
        default: "0",
        reported: false,
    },
];

/// RisingWave's planner, storage and rate settings, which its scripts and e2e files set.
/// weir accepts them, shows what was set, and is not changed by them: it has no such
/// choices (two-phase aggregation, compaction groups, background DDL) to make.
const RISINGWAVE_ONLY: &[Param] = &[
    Param {
        name: "create_compaction_group_for_mv",
        default: "false",
        reported: false,
    },
    Param {
        name: "query_mode",
        default: "auto",
        reported: false,
    },
    Param {
        name: "background_ddl",
        default: "false",
        reported: false,
    },
    Param {
        name: "rw_enable_two_phase_agg",
        default: "true",
        reported: false,
    },
    Param {
        name: "rw_force_two_phase_agg",
        default: "false",
        reported: false,
    },
    Param {
        name: "rw_force_split_distinct_agg",
        default: "false",
        reported: false,
    },
    Param {
        name: "rw_enable_share_plan",
        default: "true",
        reported: false,
    },
    Param {
        name: "rw_streaming_enable_bushy_join",
        default: "true",
        reported: false,
    },
    Param {
        name: "streaming_enable_delta_join",
        default: "false",
        reported: false,
    },
    Param {
        name: "streaming_use_arrangement_backfill",
        default: "true",
        reported: false,
    },
    Param {
        name: "batch_parallelism",
        default: "0",
        reported: false,
    },
    Param {
        name: "sink_decouple",
        default: "default",
        reported: false,
    },
    Param {
        name: "source_rate_limit",
        default: "default",
        reported: false,
    },
    Param {
        name: "backfill_rate_limit",
        default: "default",
        reported: false,
    },
];

fn find(name: &str) -> Option<&'static Param> {
    let name = match name.to_ascii_lowercase().as_str() {
        "rw_implicit_flush" => "implicit_flush".to_string(),
        "time zone" | "timezone" => "timezone".to_string(),
        other => other.to_string(),
    };
    PARAMS
        .iter()
        .chain(RISINGWAVE_ONLY)
        .find(|p| p.name.eq_ignore_ascii_case(&name))
}

fn unknown(name: &str) -> SqlError {
    SqlError::new(
        "42704",
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

/// The canonical spelling of a known parameter's name (`timezone` -> `TimeZone`).
pub(crate) fn canonical(name: &str) -> Option<&'static str> {
    find(name).map(|p| p.name)
}

/// `streaming_parallelism` as views created by this session use it (0 = all cores).
pub(crate) fn streaming_parallelism(values: &Values) -> usize {
    get(values, "streaming_parallelism").map_or(0, |(_, v)| v.parse().unwrap_or(0))
}

/// The session's `statement_timeout` (None: off).
pub(crate) fn statement_timeout(values: &Values) -> Option<Duration> {
    let (_, value) = get(values, "statement_timeout").ok()?;
    parse_timeout(&value).filter(|d| !d.is_zero())
}

/// A Postgres time setting: a number of milliseconds, or a number with a unit.
pub(crate) fn parse_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n.checked_mul(1000)?,
        "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// As Postgres shows a time setting: in the largest unit that divides it (`5s`, `1500ms`).
fn format_timeout(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0".into();
    }
    [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1000, "s"),
    ]
    .iter()
    .find(|(unit, _)| ms.is_multiple_of(*unit))
    .map_or_else(
        || format!("{ms}ms"),
        |(unit, name)| format!("{}{name}", ms / unit),
    )
}

/// The statement with what only the session knows filled in (the planner is shared by
/// every session and cannot see them): `current_user` and `session_user` become the
/// session's user; each `current_setting('name')` gets the parameter's
/// value as a second argument, each two-argument `has_table_privilege(relation, privilege)`
/// the session's user as a first. None when it calls neither. An unknown parameter is
/// 42704, as in Postgres.
pub(crate) fn resolve_session_functions(
    values: &Values,
    user: &str,
    statement: &ast::Statement,
) -> Result<Option<ast::Statement>, SqlError> {
    let mut statement = statement.clone();
    let mut found = false;
    let outcome = ast::visit_expressions_mut(&mut statement, |expr| {
        let ast::Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        let name = f.name.to_string().to_ascii_lowercase();
        let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
        // `current_user`, `session_user` and `user` are planned as `session_user`.
        if matches!(name, "session_user" | "current_user" | "user")
            && matches!(&f.args, ast::FunctionArguments::None)
            || matches!(&f.args, ast::FunctionArguments::List(l) if l.args.is_empty() && name == "session_user")
        {
            let user = user.to_string();
            found = true;
            f.name = ast::ObjectName::from(vec![ast::Ident::new("session_user")]);
            f.args = ast::FunctionArguments::List(ast::FunctionArgumentList {
                duplicate_treatment: None,
                args: vec![ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(
                    ast::Expr::Value(ast::Value::SingleQuotedString(user).into()),
                ))],
                clauses: vec![],
            });
            return ControlFlow::Continue(());
        }
        let ast::FunctionArguments::List(list) = &mut f.args else {
            return ControlFlow::Continue(());
        };
        if name == "has_table_privilege" && list.args.len() == 2 {
            let user = user.to_string();
            found = true;
            list.args.insert(
                0,
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Value(
                    ast::Value::SingleQuotedString(user).into(),
                ))),
            );
            return ControlFlow::Continue(());
        }
        if name != "current_setting" {
            return ControlFlow::Continue(());
        }
        let [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Value(v)))] =
            list.args.as_slice()
        else {
            return ControlFlow::Continue(());
        };
        let ast::Value::SingleQuotedString(parameter) = v.value.clone() else {
            return ControlFlow::Continue(());
        };
        let value = if parameter.eq_ignore_ascii_case("server_version_num") {
            Ok(server_version_num())
        } else {
            get(values, &parameter).map(|(_, v)| v)
        };
        match value {
            Ok(value) => {
                found = true;
                // The planner's two-argument form returns its second argument; the call
                // keeps its name, so the column is still named `current_setting`.
                list.args
                    .push(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(
                        ast::Expr::Value(ast::Value::SingleQuotedString(value).into()),
                    )));
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        }
    });
    if let ControlFlow::Break(e) = outcome {
        return Err(e);
    }
    Ok(found.then_some(statement))
}

/// `server_version_num` for the version weir reports (`15.0` -> `150000`).
fn server_version_num() -> String {
    let mut parts = crate::SERVER_VERSION.split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major * 10_000 + minor).to_string()
}

/// The canonical name of `name` and its value.
pub(crate) fn get(values: &Values, name: &str) -> Result<(&'static str, String), SqlError> {
    let p = find(name).ok_or_else(|| unknown(name))?;
    let value = values
        .get(&p.name.to_ascii_lowercase())
        .cloned()
        .unwrap_or_else(|| p.default.to_string());
    Ok((p.name, value))
}

/// Sets `name` (None resets it); returns the (name, value) to report to the client, if any.
pub(crate) fn set(
    values: &mut Values,
    name: &str,
    value: Option<&str>,
) -> Result<Option<(String, String)>, SqlError> {
    let p = find(name).ok_or_else(|| unknown(name))?;
    let value = value
        .map(str::to_string)
        .unwrap_or_else(|| p.default.to_string());
    let value = normalize(p.name, &value)?;
    values.insert(p.name.to_ascii_lowercase(), value.clone());
    Ok(p.reported.then(|| (p.name.to_string(), value)))
}

/// The longest value a parameter takes (reported ones go to the client in one message).
const MAX_VALUE_BYTES: usize = 4096;

fn normalize(name: &str, value: &str) -> Result<String, SqlError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(SqlError::new(
            "22023",
            format!(
                "value for parameter \"{name}\" is {} bytes long (at most {MAX_VALUE_BYTES})",
                value.len()
            ),
        ));
    }
    let bool_param = matches!(
        name,
        "implicit_flush" | "standard_conforming_strings" | "transaction_read_only" | "jit"
    );
    if bool_param {
        return match value.to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => Ok("on".into()),
            "off" | "false" | "0" | "no" => Ok("off".into()),
            _ => Err(SqlError::new(
                "22023",
                format!("parameter \"{name}\" requires a Boolean value"),
            )),
        };
    }
    if name == "streaming_parallelism" {
        value.parse::<u16>().map_err(|_| {
            SqlError::new(
                "22023",
                format!(
                    "invalid value for parameter \"{name}\": \"{value}\" (a number of cores, 0 for all)"
                ),
            )
        })?;
    }
    if name == "statement_timeout" {
        return parse_timeout(value)
            .map(format_timeout)
            .ok_or_else(|| {
                SqlError::new(
                    "22023",
                    format!(
                        "invalid value for parameter \"{name}\": \"{value}\" (milliseconds, or a number with ms, s, min, h or d)"
                    ),
                )
            });
    }
    if name == "extra_float_digits" {
        value.parse::<i64>().map_err(|_| {
            SqlError::new(
                "22023",
                format!("invalid value for parameter \"{name}\": \"{value}\""),
            )
        })?;
    }
    if name == "client_encoding"
        && !matches!(
            value.to_ascii_uppercase().replace('-', "").as_str(),
            "UTF8" | "UNICODE"
        )
    {
        return Err(SqlError::new(
            "0A000",
            format!("client encoding \"{value}\" is not supported (only UTF8)"),
        ));
    }
    Ok(value.to_string())
}

/// Every parameter with its default value, for `pg_settings`.
pub(crate) fn defaults() -> Vec<(String, String)> {
    all(&Values::new())
}

/// Every parameter with its current value, for SHOW ALL.
pub(crate) fn all(values: &Values) -> Vec<(String, String)> {
    PARAMS
        .iter()
        .filter_map(|p| get(values, p.name).ok())
        .map(|(n, v)| (n.to_string(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risingwave_settings_are_accepted_and_shown() {
        let mut m = Values::new();
        set(&mut m, "CREATE_COMPACTION_GROUP_FOR_MV", Some("true")).unwrap();
        assert_eq!(get(&m, "create_compaction_group_for_mv").unwrap().1, "true");
        assert_eq!(get(&m, "query_mode").unwrap().1, "auto");
        assert!(set(&mut m, "rw_no_such_setting", Some("1")).is_err());
    }

    #[test]
    fn set_show_reset_and_unknown() {
        let mut m = Values::new();
        assert_eq!(
            set(&mut m, "TIMEZONE", Some("Europe/Paris")).unwrap(),
            Some(("TimeZone".into(), "Europe/Paris".into()))
        );
        assert_eq!(get(&m, "timezone").unwrap().1, "Europe/Paris");
        assert_eq!(
            set(&mut m, "rw_implicit_flush", Some("true")).unwrap(),
            None
        );
        assert_eq!(get(&m, "implicit_flush").unwrap().1, "on");
        set(&mut m, "timezone", None).unwrap();
        assert_eq!(get(&m, "TimeZone").unwrap().1, "UTC");
        assert_eq!(
            set(&mut m, "no_such_thing", Some("1")).unwrap_err().code,
            "42704"
        );
        assert_eq!(
            set(&mut m, "implicit_flush", Some("maybe"))
                .unwrap_err()
                .code,
            "22023"
        );
        // Views' instances per keyed operator: a count of cores, 0 for all.
        assert_eq!(streaming_parallelism(&m), 0);
        set(&mut m, "streaming_parallelism", Some("3")).unwrap();
        assert_eq!(streaming_parallelism(&m), 3);
        assert_eq!(
            set(&mut m, "streaming_parallelism", Some("-1"))
                .unwrap_err()
                .code,
            "22023"
        );
        assert_eq!(
            streaming_parallelism(&m),
            3,
            "a refused value changes nothing"
        );
        // statement_timeout: milliseconds or a unit, shown as Postgres shows it; 0 is off.
        assert_eq!(statement_timeout(&m), None);
        set(&mut m, "statement_timeout", Some("1500")).unwrap();
        assert_eq!(get(&m, "statement_timeout").unwrap().1, "1500ms");
        assert_eq!(statement_timeout(&m), Some(Duration::from_millis(1500)));
        set(&mut m, "statement_timeout", Some("2min")).unwrap();
        assert_eq!(get(&m, "statement_timeout").unwrap().1, "2min");
        set(&mut m, "statement_timeout", Some("0")).unwrap();
        assert_eq!(statement_timeout(&m), None);
        let e = set(&mut m, "statement_timeout", Some("soon")).unwrap_err();
        assert_eq!(e.code, "22023");
    }
}
