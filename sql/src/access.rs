//! Who may do what: logins (trust, or SCRAM verifiers), and the one check every statement
//! passes before it runs. Also what pg_catalog says of it (`pg_roles`, `has_table_privilege`).

mod visible;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{
    ColumnarValue, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility, WriteOp,
};
use datafusion_pg_catalog::pg_catalog::context::{self as pgctx, PgCatalogContextProvider};
use parking_lot::RwLock;

use crate::error::{Result, SqlError};
use crate::roles::{BOOTSTRAP_ROLE, Privilege, Role, Roles};
use crate::scram::ScramVerifier;
use crate::statement::{RoleStatement, Statement};

/// Schemas every role may read: the catalogs clients look at.
const SYSTEM_SCHEMAS: [&str; 3] = ["pg_catalog", "information_schema", "weir_catalog"];

/// The roles and how logins are checked.
#[derive(Debug, Default)]
pub struct Access {
    roles: RwLock<Roles>,
    /// `--auth password`: every session is a stored role. Under trust (the default, for
    /// local use), a name with no role acts as a superuser, as before roles existed.
    passwords: AtomicBool,
}

/// What a session is allowed, looked up once per statement.
enum Standing {
    Superuser,
    Role(Role),
}

impl Access {
    pub(crate) fn new(roles: Roles) -> Self {
        Self {
            roles: RwLock::new(roles),
            passwords: AtomicBool::new(false),
        }
    }

    /// Turns on `--auth password`. With `bootstrap_password`, the superuser `weir` gets it
    /// (created if missing); without one, some superuser must already have a password.
    pub fn require_passwords(&self, bootstrap_password: Option<&str>) -> Result<()> {
        let mut roles = self.roles.write();
        if let Some(password) = bootstrap_password {
            let mut role = roles.get(BOOTSTRAP_ROLE).cloned().unwrap_or(Role {
                name: BOOTSTRAP_ROLE.to_string(),
                ..Role::default()
            });
            role.superuser = true;
            role.login = true;
            role.verifier = Some(ScramVerifier::new(password)?.to_string());
            roles.put(role)?;
        } else {
            let any = roles.names().into_iter().any(|n| {
                roles
                    .get(&n)
                    .is_some_and(|r| r.superuser && r.login && r.verifier().is_some())
            });
            if !any {
                return Err(SqlError::new(
                    "28000",
                    "--auth password needs a first password: set WEIR_PASSWORD or --password-file",
                ));
            }
        }
        self.passwords.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub fn passwords_required(&self) -> bool {
        self.passwords.load(Ordering::Relaxed)
    }

    /// The verifier a password login as `user` must match: 28000 when no such role may log
    /// in, 28P01 when it has no password.
    pub fn login_verifier(&self, user: &str) -> Result<ScramVerifier> {
        let roles = self.roles.read();
        let role = roles.get(user).filter(|r| r.login).ok_or_else(|| {
            SqlError::new(
                "28000",
                format!("role \"{user}\" does not exist or may not log in"),
            )
        })?;
        role.verifier().ok_or_else(|| password_failed(user))
    }

    /// Whether statements of `user` are checked (it is not a superuser).
    pub fn checks(&self, user: &str) -> bool {
        !matches!(self.standing(user), Ok(Standing::Superuser))
    }

    fn standing(&self, user: &str) -> Result<Standing> {
        match self.roles.read().get(user) {
            Some(role) if role.superuser => Ok(Standing::Superuser),
            Some(role) => Ok(Standing::Role(role.clone())),
            None if !self.passwords_required() => Ok(Standing::Superuser),
            None => Err(SqlError::new(
                "28000",
                format!("role \"{user}\" does not exist"),
            )),
        }
    }

    /// The check before every statement of a session of `user`: its relations' privileges
    /// for queries, DML and subscriptions (`plans`: what they read and write), a superuser
    /// for everything that changes the catalog. 42501 when it may not.
    pub fn authorize(
        &self,
        user: &str,
        statement: &Statement,
        plans: &[&LogicalPlan],
        is_relation: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let Standing::Role(role) = self.standing(user)? else {
            return Ok(());
        };
        let needs_superuser = |what: &str| {
            Err(SqlError::new(
                "42501",
                format!("permission denied: {what} needs a superuser (role \"{user}\" is not one)"),
            ))
        };
        match statement {
            Statement::Create(c) => needs_superuser(&format!("CREATE {}", c.kind.sql_name())),
            Statement::CreateView { .. } => needs_superuser("CREATE MATERIALIZED VIEW"),
            Statement::CreateSink(_) => needs_superuser("CREATE SINK"),
            Statement::Drop { kind, .. } => needs_superuser(&format!("DROP {}", kind.sql_name())),
            Statement::Checkpoint => needs_superuser("CHECKPOINT"),
            // A role may change its own password, as in Postgres.
            Statement::Role(r) => match r.as_ref() {
                RoleStatement::Alter { name, options }
                    if name == user && options.superuser.is_none() && options.login.is_none() =>
                {
                    Ok(())
                }
                other => needs_superuser(&other.to_string()),
            },
            Statement::Query(_) | Statement::Subscribe { .. } => {
                for plan in plans {
                    check_plan(&role, plan, is_relation)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `has_table_privilege(user, relation, privileges)`: whether any of the comma-separated
    /// privileges is held. Relations of the system schemas may be read by every role.
    fn has_table_privilege(&self, user: &str, relation: &str, privileges: &str) -> Result<bool> {
        let (schema, name) = split_relation(relation);
        let role = match self.standing(user)? {
            Standing::Superuser => return Ok(true),
            Standing::Role(role) => role,
        };
        let mut any = false;
        for word in privileges.split(',') {
            let word = word.trim();
            let word = word
                .strip_suffix(" WITH GRANT OPTION")
                .or_else(|| word.strip_suffix(" with grant option"))
                .unwrap_or(word);
            let system = schema
                .as_deref()
                .is_some_and(|s| SYSTEM_SCHEMAS.contains(&s));
            any |= match Privilege::parse(word) {
                Some(Privilege::Select) if system => true,
                Some(p) => !system && role.may(p, &name),
                // TRUNCATE, REFERENCES, TRIGGER: nothing weir grants.
                None if ["TRUNCATE", "REFERENCES", "TRIGGER"]
                    .contains(&word.to_ascii_uppercase().as_str()) =>
                {
                    false
                }
                None => {
                    return Err(SqlError::new(
                        "22023",
                        format!("unrecognized privilege type: \"{word}\""),
                    ));
                }
            };
        }
        Ok(any)
    }

    /// Runs a role statement (authorized already).
    pub(crate) fn execute(&self, statement: &RoleStatement, relations: &[String]) -> Result<()> {
        let mut roles = self.roles.write();
        match statement {
            RoleStatement::Create {
                name,
                if_not_exists,
                options,
            } => {
                if roles.get(name).is_some() {
                    return if *if_not_exists {
                        Ok(())
                    } else {
                        Err(SqlError::new(
                            "42710",
                            format!("role \"{name}\" already exists"),
                        ))
                    };
                }
                let mut role = Role {
                    name: name.clone(),
                    ..Role::default()
                };
                apply(&mut role, options)?;
                roles.put(role)
            }
            RoleStatement::Alter { name, options } => {
                let mut role = roles.get(name).cloned().ok_or_else(|| no_role(name))?;
                apply(&mut role, options)?;
                roles.put(role)
            }
            RoleStatement::Drop { names, if_exists } => {
                for name in names {
                    if roles.get(name).is_none() && !if_exists {
                        return Err(no_role(name));
                    }
                }
                for name in names {
                    roles.remove(name)?;
                }
                Ok(())
            }
            RoleStatement::Grant {
                privileges,
                target,
                roles: grantees,
                revoke,
            } => {
                let targets = match target {
                    crate::statement::GrantTarget::AllRelations => relations.to_vec(),
                    crate::statement::GrantTarget::Relations(names) => {
                        if let Some(missing) = names.iter().find(|n| !relations.contains(n)) {
                            return Err(SqlError::new(
                                "42P01",
                                format!("relation \"{missing}\" does not exist"),
                            ));
                        }
                        names.clone()
                    }
                };
                for grantee in grantees {
                    let mut role = roles
                        .get(grantee)
                        .cloned()
                        .ok_or_else(|| no_role(grantee))?;
                    for relation in &targets {
                        let held = role.grants.entry(relation.clone()).or_default();
                        for p in privileges {
                            if *revoke {
                                held.remove(p);
                            } else {
                                held.insert(*p);
                            }
                        }
                        if held.is_empty() {
                            role.grants.remove(relation);
                        }
                    }
                    roles.put(role)?;
                }
                Ok(())
            }
        }
    }

    /// A relation was dropped: its grants go with it.
    pub(crate) fn forget_relation(&self, name: &str) -> Result<()> {
        self.roles.write().forget_relation(name)
    }
}

fn apply(role: &mut Role, options: &crate::statement::RoleOptions) -> Result<()> {
    if let Some(s) = options.superuser {
        role.superuser = s;
    }
    if let Some(l) = options.login {
        role.login = l;
    }
    match &options.password {
        None => {}
        Some(None) => role.verifier = None,
        // A verifier given as the password (what pg_dumpall writes) is stored as it is.
        Some(Some(p)) => {
            role.verifier = Some(match ScramVerifier::parse(p) {
                Some(v) => v.to_string(),
                None => ScramVerifier::new(p)?.to_string(),
            })
        }
    }
    Ok(())
}

fn no_role(name: &str) -> SqlError {
    SqlError::new("42704", format!("role \"{name}\" does not exist"))
}

/// A login whose password does not match, or whose role has none (28P01).
pub fn password_failed(user: &str) -> SqlError {
    SqlError::new(
        "28P01",
        format!("password authentication failed for user \"{user}\""),
    )
}

/// Every relation a plan reads needs SELECT, the one it writes INSERT, UPDATE or DELETE.
fn check_plan(role: &Role, plan: &LogicalPlan, is_relation: &dyn Fn(&str) -> bool) -> Result<()> {
    let mut denied = None;
    let mut need = |privilege: Privilege, table: &TableReference| {
        let name = match table.schema() {
            Some("public") | None => table.table(),
            Some(_) => return,
        };
        if denied.is_none() && is_relation(name) && !role.may(privilege, name) {
            denied = Some(SqlError::new(
                "42501",
                format!(
                    "permission denied for relation {name} ({} was not granted to role \"{}\")",
                    privilege.keyword(),
                    role.name
                ),
            ));
        }
    };
    plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => need(Privilege::Select, &scan.table_name),
            LogicalPlan::Dml(dml) => {
                let privilege = match dml.op {
                    WriteOp::Insert(_) | WriteOp::Ctas => Privilege::Insert,
                    WriteOp::Update => Privilege::Update,
                    // Delete, Truncate, and what later DataFusion versions add.
                    _ => Privilege::Delete,
                };
                need(privilege, &dml.table_name);
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    denied.map_or(Ok(()), Err)
}

/// `public.t`, `"T"`, `t` as (schema, name) the way the catalog spells them.
fn split_relation(text: &str) -> (Option<String>, String) {
    let part = |p: &str| {
        let p = p.trim();
        match p.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => p.to_lowercase(),
        }
    };
    match text.rsplit_once('.') {
        Some((schema, name)) => {
            let schema = part(schema);
            let name = part(name);
            if schema == "public" {
                (None, name)
            } else {
                (Some(schema), name)
            }
        }
        None => (None, part(text)),
    }
}

/// pg_catalog's view of the roles (`pg_roles`, `\du`).
#[derive(Debug, Clone)]
pub(crate) struct RolesCatalog(pub(crate) Arc<Access>);

/// The bootstrap superuser `weir` is always listed, as Postgres always has its bootstrap
/// superuser: without a role of that name (no `--auth password` yet), a client that logs in
/// as `weir` is a superuser, and `weir` owns every relation (`pg_get_userbyid`).
#[async_trait]
impl PgCatalogContextProvider for RolesCatalog {
    async fn roles(&self) -> Vec<String> {
        let mut names = self.0.roles.read().names();
        if !names.iter().any(|n| n == BOOTSTRAP_ROLE) {
            names.push(BOOTSTRAP_ROLE.to_string());
            names.sort();
        }
        names
    }

    async fn role(&self, name: &str) -> Option<pgctx::Role> {
        let roles = self.0.roles.read();
        let (superuser, login) = match roles.get(name) {
            Some(role) => (role.superuser, role.login),
            None if name == BOOTSTRAP_ROLE => (true, true),
            None => return None,
        };
        Some(pgctx::Role {
            name: name.to_string(),
            is_superuser: superuser,
            can_login: login,
            can_create_db: superuser,
            can_create_role: superuser,
            can_create_user: superuser,
            can_replication: false,
            grants: vec![],
            inherited_roles: vec![],
        })
    }
}

/// `has_table_privilege([user,] relation, privileges)`. The two-argument form is given the
/// session's user by the server before planning; unresolved, it answers for a superuser.
#[derive(Debug)]
pub(crate) struct HasTablePrivilege {
    access: Arc<Access>,
    signature: Signature,
}

impl HasTablePrivilege {
    pub(crate) fn udf(access: Arc<Access>) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            access,
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8, DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Int64, DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Int64, DataType::Utf8]),
                ],
                Volatility::Stable,
            ),
        })
    }
}

impl PartialEq for HasTablePrivilege {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.access, &other.access)
    }
}
impl Eq for HasTablePrivilege {}
impl std::hash::Hash for HasTablePrivilege {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "has_table_privilege".hash(state);
    }
}

impl ScalarUDFImpl for HasTablePrivilege {
    fn name(&self) -> &str {
        "has_table_privilege"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (user, relation, privileges): (Option<&ArrayRef>, &ArrayRef, &ArrayRef) = match arrays
            .as_slice()
        {
            [u, r, p] => (Some(u), r, p),
            [r, p] => (None, r, p),
            _ => {
                return datafusion::common::exec_err!("has_table_privilege takes 2 or 3 arguments");
            }
        };
        let mut out = BooleanBuilder::with_capacity(rows);
        for row in 0..rows {
            let text = |a: &ArrayRef| {
                (a.data_type() == &DataType::Utf8 && !a.is_null(row))
                    .then(|| a.as_string::<i32>().value(row).to_string())
            };
            let Some(privs) = text(privileges) else {
                out.append_null();
                continue;
            };
            let user = user.and_then(text);
            // An oid names a relation weir cannot look up here: answered as for its role's
            // standing (a superuser sees everything; others are told the truth by name).
            let answer = match (user, text(relation)) {
                (Some(user), Some(relation)) => {
                    self.access.has_table_privilege(&user, &relation, &privs)
                }
                (Some(user), None) => Ok(matches!(
                    self.access.standing(&user),
                    Ok(Standing::Superuser)
                )),
                (None, _) => Ok(true),
            };
            out.append_value(
                answer.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
            );
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
