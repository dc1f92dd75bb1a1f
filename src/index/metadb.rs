//! Document metadata in SQLite (`metadata.sqlite` inside the index
//! directory), and filters over it.
//!
//! One table, `metadata`: `_doc` (the document's stable global number, see
//! [`crate::index::live`]), `_id` (its external id), `_json` (the object as
//! given) and one column per top-level key seen so far (added as keys
//! appear; names must be identifiers not starting with `_`). Values: JSON
//! numbers, strings and booleans (0/1) as SQLite values, `null` as NULL,
//! arrays and objects as JSON text (readable with `json_extract`).
//!
//! **Consistency with the live manifest.** Rows are written, in one SQLite
//! transaction, *before* the manifest that publishes their documents is
//! committed. Rows of global numbers at or past the manifest's total belong to
//! no committed mutation (a writer killed between the two commits): readers
//! ignore them (a filter's matches are intersected with the snapshot's
//! documents) and the next writer deletes them before it writes.
//!
//! **Filters** are a WHERE condition with `?` parameters, always bound, never
//! spliced: `year >= ? AND topic = ?` with `[2020, "biology"]`. The condition
//! runs on a read-only connection, alone (`SELECT _doc FROM metadata WHERE
//! (…)`), under an authorizer that allows only reading the `metadata` table
//! and calling a fixed list of pure functions; the statement must be
//! read-only and a single statement. Anything else (writes, `ATTACH`,
//! pragmas, other tables, `sqlite_master`, several statements) is refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{params_from_iter, Connection, OpenFlags};
use serde_json::Value;

use crate::error::{Error, Result};

/// The database file inside an index directory.
pub const METADATA_DB: &str = "metadata.sqlite";
const TABLE: &str = "metadata";
/// Longest filter condition accepted.
pub const MAX_CONDITION_BYTES: usize = 4096;
/// Functions a filter may call (all pure; no extension loading, no I/O).
const ALLOWED_FUNCTIONS: &[&str] = &[
    "abs",
    "coalesce",
    "glob",
    "ifnull",
    "iif",
    "instr",
    "json_array_length",
    "json_extract",
    "json_type",
    "json_valid",
    "length",
    "like",
    "lower",
    "ltrim",
    "max",
    "min",
    "nullif",
    "round",
    "rtrim",
    "substr",
    "substring",
    "trim",
    "typeof",
    "upper",
];

fn db_err(path: &Path, e: rusqlite::Error) -> Error {
    Error::IndexFormat {
        path: path.to_path_buf(),
        message: format!("metadata database: {e}"),
    }
}

/// A metadata filter: a WHERE condition over the `metadata` table's columns
/// with `?` placeholders, and the values bound to them (JSON scalars).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Filter {
    pub condition: String,
    #[serde(default)]
    pub params: Vec<Value>,
}

impl Filter {
    pub fn new(condition: impl Into<String>, params: Vec<Value>) -> Self {
        Self {
            condition: condition.into(),
            params,
        }
    }
}

/// Whether `name` may be a metadata column: an ASCII identifier of at most
/// 64 characters, not starting with `_` (reserved) or a digit.
pub fn valid_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Null => S::Null,
        Value::Bool(b) => S::Integer(*b as i64),
        Value::Number(n) => match n.as_i64() {
            Some(i) => S::Integer(i),
            None => S::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => S::Text(s.clone()),
        other => S::Text(other.to_string()),
    }
}

/// Errors unless `v` is a JSON object whose keys are all [`valid_key`]s.
pub fn check_object(id: &str, v: &Value) -> Result<()> {
    let Value::Object(map) = v else {
        return Err(Error::Input(format!(
            "metadata of document '{id}' must be a JSON object, not {v}"
        )));
    };
    if let Some(k) = map.keys().find(|k| !valid_key(k)) {
        return Err(Error::Input(format!(
            "metadata of document '{id}': key '{k}' is not allowed (keys are identifiers of \
             letters, digits and '_', starting with a letter, at most 64 characters)"
        )));
    }
    Ok(())
}

/// The writer's connection (read-write; only a writer holding the index lock opens it).
pub struct MetaDb {
    path: PathBuf,
    conn: Connection,
    columns: BTreeSet<String>,
}

impl MetaDb {
    /// Opens (creating if needed) the database of the index in `dir`.
    pub fn open_rw(dir: &Path) -> Result<Self> {
        let path = dir.join(METADATA_DB);
        let conn = Connection::open(&path).map_err(|e| db_err(&path, e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| db_err(&path, e))?;
        // Rollback journal, full sync: a committed transaction is durable.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS {TABLE} (_doc INTEGER PRIMARY KEY, _id TEXT NOT NULL, _json TEXT NOT NULL);"
        ))
        .map_err(|e| db_err(&path, e))?;
        let mut db = Self {
            path,
            conn,
            columns: BTreeSet::new(),
        };
        db.columns = db.read_columns()?;
        Ok(db)
    }

    fn read_columns(&self) -> Result<BTreeSet<String>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{TABLE}')"))
            .map_err(|e| db_err(&self.path, e))?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| db_err(&self.path, e))?
            .collect::<std::result::Result<BTreeSet<_>, _>>()
            .map_err(|e| db_err(&self.path, e))?;
        Ok(names)
    }

    /// Deletes rows of global numbers `>= total` (left by a writer killed
    /// between its SQLite commit and its manifest commit).
    pub fn rollback_beyond(&mut self, total: u32) -> Result<usize> {
        self.conn
            .execute(&format!("DELETE FROM {TABLE} WHERE _doc >= ?1"), [total])
            .map_err(|e| db_err(&self.path, e))
    }

    /// Inserts (or replaces) rows `(global, id, object)` in one transaction,
    /// adding columns for new keys. Objects must have passed [`check_object`].
    pub fn insert(&mut self, rows: &[(u32, &str, &Value)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| db_err(&path, e))?;
        for (g, id, v) in rows {
            let Value::Object(map) = v else {
                return Err(Error::Input(format!(
                    "metadata of document '{id}' is not a JSON object"
                )));
            };
            for k in map.keys() {
                if !valid_key(k) {
                    return Err(Error::Input(format!("metadata key '{k}' is not allowed")));
                }
                if !self.columns.contains(k) {
                    // `k` is a checked identifier; quoted all the same.
                    tx.execute(&format!("ALTER TABLE {TABLE} ADD COLUMN \"{k}\""), [])
                        .map_err(|e| db_err(&path, e))?;
                    self.columns.insert(k.clone());
                }
            }
            let keys: Vec<&String> = map.keys().collect();
            let cols: String = keys.iter().map(|k| format!(", \"{k}\"")).collect();
            let marks: String = (0..keys.len()).map(|i| format!(", ?{}", i + 4)).collect();
            let mut values: Vec<rusqlite::types::Value> = vec![
                rusqlite::types::Value::Integer(*g as i64),
                rusqlite::types::Value::Text(id.to_string()),
                rusqlite::types::Value::Text(v.to_string()),
            ];
            values.extend(keys.iter().map(|k| to_sql(&map[*k])));
            tx.execute(
                &format!("INSERT OR REPLACE INTO {TABLE} (_doc, _id, _json{cols}) VALUES (?1, ?2, ?3{marks})"),
                params_from_iter(values),
            )
            .map_err(|e| db_err(&path, e))?;
        }
        tx.commit().map_err(|e| db_err(&path, e))
    }

    /// Every row: `(global, id, json)`, by global number.
    pub fn rows(&self) -> Result<Vec<(u32, String, String)>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT _doc, _id, _json FROM {TABLE} ORDER BY _doc"))
            .map_err(|e| db_err(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| db_err(&self.path, e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| db_err(&self.path, e))?;
        Ok(rows)
    }
}

/// A query-only connection to the database of the index in `dir`, or `None`
/// when the index has none (no document was given metadata).
///
/// Opened read-write (never created) but with `PRAGMA query_only`: a writer
/// killed inside a transaction leaves a hot journal, which SQLite must roll
/// back on the next read, and a `SQLITE_OPEN_READ_ONLY` connection cannot.
/// Filters are still held to reading by the authorizer and by the statement
/// checks in [`filter`].
fn open_ro(dir: &Path) -> Result<Option<(PathBuf, Connection)>> {
    let path = dir.join(METADATA_DB);
    if !path.is_file() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_err(&path, e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| db_err(&path, e))?;
    conn.execute_batch("PRAGMA query_only = ON")
        .map_err(|e| db_err(&path, e))?;
    Ok(Some((path, conn)))
}

/// The metadata objects of documents `globals` (`None` where a document has none).
pub fn get(dir: &Path, globals: &[u32]) -> Result<Vec<Option<Value>>> {
    let Some((path, conn)) = open_ro(dir)? else {
        return Ok(vec![None; globals.len()]);
    };
    let mut stmt = conn
        .prepare(&format!("SELECT _json FROM {TABLE} WHERE _doc = ?1"))
        .map_err(|e| db_err(&path, e))?;
    globals
        .iter()
        .map(|&g| {
            let mut rows = stmt.query([g]).map_err(|e| db_err(&path, e))?;
            match rows.next().map_err(|e| db_err(&path, e))? {
                Some(r) => {
                    let s: String = r.get(0).map_err(|e| db_err(&path, e))?;
                    serde_json::from_str(&s).map(Some).map_err(|e| Error::IndexFormat {
                        path: path.clone(),
                        message: format!("metadata of document {g} is not JSON: {e}"),
                    })
                }
                None => Ok(None),
            }
        })
        .collect()
}

/// Errors unless a bound parameter is a JSON scalar.
fn check_param(i: usize, v: &Value) -> Result<()> {
    if matches!(v, Value::Array(_) | Value::Object(_)) {
        return Err(Error::Input(format!(
            "filter parameter {} must be a number, string, boolean or null, not {v}",
            i + 1
        )));
    }
    Ok(())
}

/// The global numbers of the documents whose metadata satisfies `filter`
/// (ascending). Refuses any condition that does more than filter.
pub fn filter(dir: &Path, filter: &Filter) -> Result<Vec<u32>> {
    let cond = filter.condition.trim();
    if cond.is_empty() {
        return Err(Error::Input("the filter condition is empty".into()));
    }
    if cond.len() > MAX_CONDITION_BYTES {
        return Err(Error::Input(format!(
            "the filter condition is {} bytes; at most {MAX_CONDITION_BYTES} are accepted",
            cond.len()
        )));
    }
    for (i, p) in filter.params.iter().enumerate() {
        check_param(i, p)?;
    }
    let Some((path, mut conn)) = open_ro(dir)? else {
        return Err(Error::Input(format!(
            "index {} holds no document metadata to filter on",
            dir.display()
        )));
    };
    let refused = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let seen = refused.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        let why = match (ctx.action, ctx.database_name) {
            (AuthAction::Select, _) => None,
            (AuthAction::Read { table_name, .. }, Some("main")) if table_name == TABLE => None,
            (AuthAction::Read { table_name, .. }, _) => Some(format!("reads table '{table_name}'")),
            (AuthAction::Function { function_name }, _)
                if ALLOWED_FUNCTIONS.contains(&function_name.to_ascii_lowercase().as_str()) =>
            {
                None
            }
            (AuthAction::Function { function_name }, _) => {
                Some(format!("calls function '{function_name}'"))
            }
            (other, _) => Some(format!("does more than read ({other:?})")),
        };
        match why {
            None => Authorization::Allow,
            Some(w) => {
                if let Ok(mut s) = seen.lock() {
                    s.get_or_insert(w);
                }
                Authorization::Deny
            }
        }
    }))
    .map_err(|e| db_err(&path, e))?;
    let sql = format!("SELECT _doc FROM {TABLE} WHERE ({cond})");
    let refuse = |detail: String| {
        Error::Input(format!(
            "filter condition refused: {detail} (a condition may only test the metadata \
             columns, with ? parameters)"
        ))
    };
    let mut stmt = match conn.prepare(&sql) {
        Ok(s) => s,
        Err(e) => {
            let why = refused.lock().ok().and_then(|s| s.clone());
            return Err(refuse(why.unwrap_or_else(|| e.to_string())));
        }
    };
    if !stmt.readonly() {
        return Err(refuse("it is not read-only".into()));
    }
    if stmt.parameter_count() != filter.params.len() {
        return Err(Error::Input(format!(
            "the filter condition has {} parameter(s) but {} value(s) were given",
            stmt.parameter_count(),
            filter.params.len()
        )));
    }
    let rows = stmt
        .query_map(params_from_iter(filter.params.iter().map(to_sql)), |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| refuse(e.to_string()))?;
    let mut out = Vec::new();
    for r in rows {
        let g = r.map_err(|e| refuse(e.to_string()))?;
        if let Ok(g) = u32::try_from(g) {
            out.push(g);
        }
    }
    out.sort_unstable();
    Ok(out)
}
