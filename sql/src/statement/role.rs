//! Parsing of role statements: CREATE / ALTER / DROP USER or ROLE, and GRANT / REVOKE of
//! relation privileges, in Postgres's spellings (options weir does not have are refused).

use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::roles::Privilege;
use crate::statement::{Statement, eat_word, expect_end, expect_word, ident, object_name, parser};

/// What a role statement sets; None leaves a setting as it is (or at its default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleOptions {
    /// `PASSWORD 'p'` is Some(Some), `PASSWORD NULL` Some(None).
    pub password: Option<Option<String>>,
    pub superuser: Option<bool>,
    pub login: Option<bool>,
}

/// Which relations a GRANT or REVOKE names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantTarget {
    Relations(Vec<String>),
    /// `ALL TABLES IN SCHEMA public`: every relation that exists now.
    AllRelations,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleStatement {
    Create {
        name: String,
        if_not_exists: bool,
        options: RoleOptions,
    },
    Alter {
        name: String,
        options: RoleOptions,
    },
    Drop {
        names: Vec<String>,
        if_exists: bool,
    },
    Grant {
        privileges: Vec<Privilege>,
        target: GrantTarget,
        roles: Vec<String>,
        /// REVOKE ... FROM.
        revoke: bool,
    },
}

impl std::fmt::Display for RoleStatement {
    /// The command tag.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Create { .. } => "CREATE ROLE",
            Self::Alter { .. } => "ALTER ROLE",
            Self::Drop { .. } => "DROP ROLE",
            Self::Grant { revoke: false, .. } => "GRANT",
            Self::Grant { revoke: true, .. } => "REVOKE",
        })
    }
}

pub(crate) fn parse_role_statement(text: &str) -> Result<Statement, ParserError> {
    let mut p = parser(text)?;
    let statement = if eat_word(&mut p, "CREATE") {
        // CREATE USER is CREATE ROLE that may log in.
        let user = eat_word(&mut p, "USER");
        if !user {
            expect_word(&mut p, "ROLE")?;
        }
        let if_not_exists = eat_word(&mut p, "IF") && {
            expect_word(&mut p, "NOT")?;
            expect_word(&mut p, "EXISTS")?;
            true
        };
        let name = ident(&mut p)?;
        let mut options = role_options(&mut p)?;
        options.login = options.login.or(Some(user));
        RoleStatement::Create {
            name,
            if_not_exists,
            options,
        }
    } else if eat_word(&mut p, "ALTER") {
        if !eat_word(&mut p, "USER") {
            expect_word(&mut p, "ROLE")?;
        }
        let name = ident(&mut p)?;
        RoleStatement::Alter {
            name,
            options: role_options(&mut p)?,
        }
    } else if eat_word(&mut p, "DROP") {
        if !eat_word(&mut p, "USER") {
            expect_word(&mut p, "ROLE")?;
        }
        let if_exists = eat_word(&mut p, "IF") && {
            expect_word(&mut p, "EXISTS")?;
            true
        };
        let names = p.parse_comma_separated(ident)?;
        RoleStatement::Drop { names, if_exists }
    } else {
        let revoke = eat_word(&mut p, "REVOKE");
        if !revoke {
            expect_word(&mut p, "GRANT")?;
        }
        let privileges = privileges(&mut p)?;
        expect_word(&mut p, "ON")?;
        let target = grant_target(&mut p)?;
        expect_word(&mut p, if revoke { "FROM" } else { "TO" })?;
        let roles = p.parse_comma_separated(|p| {
            eat_word(p, "GROUP");
            ident(p)
        })?;
        if !revoke && eat_word(&mut p, "WITH") {
            return Err(ParserError::ParserError(
                "WITH GRANT OPTION is not supported: only superusers grant".into(),
            ));
        }
        if revoke {
            let _ = eat_word(&mut p, "CASCADE") || eat_word(&mut p, "RESTRICT");
        }
        RoleStatement::Grant {
            privileges,
            target,
            roles,
            revoke,
        }
    };
    expect_end(&mut p)?;
    Ok(Statement::Role(Box::new(statement)))
}

fn role_options(p: &mut Parser<'_>) -> Result<RoleOptions, ParserError> {
    eat_word(p, "WITH");
    let mut options = RoleOptions::default();
    while let Token::Word(w) = p.peek_token().token {
        let word = w.value.to_ascii_uppercase();
        p.next_token();
        match word.as_str() {
            "SUPERUSER" => options.superuser = Some(true),
            "NOSUPERUSER" => options.superuser = Some(false),
            "LOGIN" => options.login = Some(true),
            "NOLOGIN" => options.login = Some(false),
            "ENCRYPTED" | "PASSWORD" => {
                if word == "ENCRYPTED" {
                    expect_word(p, "PASSWORD")?;
                }
                options.password = Some(if eat_word(p, "NULL") {
                    None
                } else {
                    Some(p.parse_literal_string()?)
                });
            }
            // Every role inherits nothing but its own grants; these change nothing.
            "INHERIT" | "NOINHERIT" => {}
            other => {
                return Err(ParserError::ParserError(format!(
                    "role option {other} is not supported (weir has SUPERUSER, LOGIN and PASSWORD)"
                )));
            }
        }
    }
    Ok(options)
}

fn privileges(p: &mut Parser<'_>) -> Result<Vec<Privilege>, ParserError> {
    if eat_word(p, "ALL") {
        eat_word(p, "PRIVILEGES");
        return Ok(Privilege::ALL.to_vec());
    }
    p.parse_comma_separated(|p| {
        let Token::Word(w) = p.next_token().token else {
            return p.expected("a privilege", p.peek_token());
        };
        Privilege::parse(&w.value).ok_or_else(|| {
            ParserError::ParserError(format!(
                "privilege {} is not supported (weir has SELECT, INSERT, UPDATE, DELETE on relations)",
                w.value.to_ascii_uppercase()
            ))
        })
    })
}

fn grant_target(p: &mut Parser<'_>) -> Result<GrantTarget, ParserError> {
    if eat_word(p, "ALL") {
        if !eat_word(p, "TABLES") {
            expect_word(p, "MATERIALIZED")?;
            expect_word(p, "VIEWS")?;
        }
        expect_word(p, "IN")?;
        expect_word(p, "SCHEMA")?;
        let schema = ident(p)?;
        if schema != "public" {
            return Err(ParserError::ParserError(format!(
                "schema \"{schema}\" does not exist"
            )));
        }
        return Ok(GrantTarget::AllRelations);
    }
    if !eat_word(p, "TABLE") && eat_word(p, "MATERIALIZED") {
        expect_word(p, "VIEW")?;
    } else {
        let _ = eat_word(p, "SOURCE") || eat_word(p, "VIEW");
    }
    Ok(GrantTarget::Relations(
        p.parse_comma_separated(object_name)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(text: &str) -> RoleStatement {
        match parse_role_statement(text) {
            Ok(Statement::Role(r)) => *r,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn parses_postgres_spellings() {
        assert_eq!(
            role("CREATE USER Dash WITH PASSWORD 'p''w'"),
            RoleStatement::Create {
                name: "dash".into(),
                if_not_exists: false,
                options: RoleOptions {
                    password: Some(Some("p'w".into())),
                    superuser: None,
                    login: Some(true),
                },
            }
        );
        assert_eq!(
            role("CREATE ROLE ops SUPERUSER"),
            RoleStatement::Create {
                name: "ops".into(),
                if_not_exists: false,
                options: RoleOptions {
                    password: None,
                    superuser: Some(true),
                    login: Some(false),
                },
            }
        );
        assert_eq!(
            role("ALTER USER dash PASSWORD NULL"),
            RoleStatement::Alter {
                name: "dash".into(),
                options: RoleOptions {
                    password: Some(None),
                    ..Default::default()
                },
            }
        );
        assert_eq!(
            role("DROP USER IF EXISTS a, b"),
            RoleStatement::Drop {
                names: vec!["a".into(), "b".into()],
                if_exists: true,
            }
        );
        assert_eq!(
            role("GRANT SELECT, insert ON TABLE public.t, v TO dash, GROUP ops"),
            RoleStatement::Grant {
                privileges: vec![Privilege::Select, Privilege::Insert],
                target: GrantTarget::Relations(vec!["t".into(), "v".into()]),
                roles: vec!["dash".into(), "ops".into()],
                revoke: false,
            }
        );
        assert_eq!(
            role("REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM dash"),
            RoleStatement::Grant {
                privileges: Privilege::ALL.to_vec(),
                target: GrantTarget::AllRelations,
                roles: vec!["dash".into()],
                revoke: true,
            }
        );
        for bad in [
            "CREATE USER x CREATEDB",
            "GRANT TRUNCATE ON t TO x",
            "GRANT SELECT ON t TO x WITH GRANT OPTION",
        ] {
            assert!(parse_role_statement(bad).is_err(), "{bad}");
        }
    }
}
