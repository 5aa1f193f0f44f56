//! Per-namespace state: the tables a namespace has, each with its accepted ruleset and the
//! backend that runs it (the BPF datapath, or a fake in unit tests).
//!
//! Locking: the daemon holds one `Namespace` lock for the whole of a request, so requests of
//! one namespace are serialized (as the kernel serializes them under `xt[af].mutex`) while
//! namespaces proceed independently.

use std::collections::BTreeMap;
use std::fmt;

use ipt_abi::{Family, Table, XtCounters};

use super::refusal::Refusal;

/// A network namespace, named by its nsfs inode (unique while the namespace lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NsId(pub u64);

impl fmt::Display for NsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}]", self.0)
    }
}

/// Which table: ip_tables and ip6_tables each have their own tables of the same names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableKey {
    /// IPv4 (iptables) or IPv6 (ip6tables); IPv4's sort first.
    pub family: Family,
    /// The table's name (`filter`).
    pub name: String,
}

impl TableKey {
    /// The table `name` of `family`.
    pub fn new(family: Family, name: &str) -> TableKey {
        TableKey {
            family,
            name: name.to_owned(),
        }
    }

    /// The IPv4 table `name`.
    pub fn ipv4(name: &str) -> TableKey {
        TableKey::new(Family::Ipv4, name)
    }

    /// Its pin folder's name: the table's name, `ip6-` before it for IPv6.
    pub fn dir_name(&self) -> String {
        match self.family {
            Family::Ipv4 => self.name.clone(),
            Family::Ipv6 => format!("ip6-{}", self.name),
        }
    }

    /// The key a pin folder's name stands for ([`TableKey::dir_name`]).
    pub fn from_dir_name(dir: &str) -> TableKey {
        match dir.strip_prefix("ip6-") {
            Some(name) => TableKey::new(Family::Ipv6, name),
            None => TableKey::ipv4(dir),
        }
    }
}

impl fmt::Display for TableKey {
    /// `filter` for IPv4, `ip6 filter` for IPv6 (as logs and `status` show it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            Family::Ipv4 => f.write_str(&self.name),
            Family::Ipv6 => write!(f, "ip6 {}", self.name),
        }
    }
}

/// A datapath failure, with the errno the client gets.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct BackendError {
    /// Positive errno for the client.
    pub errno: i32,
    /// What failed, for the log.
    pub what: String,
}

impl BackendError {
    /// Builds an error from an errno and a context line.
    pub fn new(errno: i32, what: impl Into<String>) -> Self {
        Self {
            errno,
            what: what.into(),
        }
    }

    /// The errno the client gets.
    pub fn errno(&self) -> i32 {
        self.errno
    }
}

impl From<BackendError> for Refusal {
    fn from(e: BackendError) -> Self {
        Refusal::new(e.errno, e.what)
    }
}

/// What runs one table of one namespace.
pub trait TableBackend: Send + fmt::Debug {
    /// Live counters, one per entry: the datapath's plus the carried base.
    fn counters(&self) -> Result<Vec<XtCounters>, BackendError>;
    /// Compiles, loads and switches to `table` (whose SET_REPLACE bytes are `blob`). Returns the
    /// previous ruleset's final counters. On error nothing has changed.
    fn replace(&mut self, table: &Table, blob: &[u8]) -> Result<Vec<XtCounters>, BackendError>;
    /// Adds `add[i]` to entry i's counters.
    fn add_counters(&mut self, add: &[XtCounters]) -> Result<(), BackendError>;
    /// What the running ruleset costs, for the one log line per applied ruleset.
    fn summary(&self) -> String {
        String::new()
    }
    /// A human summary for `bpfilter status`.
    fn status(&self) -> String {
        String::new()
    }
    /// The kernel's tables (nat, mangle, ...) that existed in the namespace when this table
    /// was instantiated: they are listed after it (see `kernel_tables`).
    fn older_tables(&self) -> Vec<String> {
        Vec::new()
    }
    /// Disassembly for `bpfilter dump` of the programs running `table`.
    fn dump(&self, _table: &Table, _hook: Option<&str>) -> String {
        String::new()
    }
    /// The text of `/proc/net/xt_recent/NAME` for the `recent` list `name` of this table's
    /// rules; None when no rule of the table names it.
    fn recent_read(&self, _name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(None)
    }
    /// One write(2) of `data` to `/proc/net/xt_recent/NAME` (`+addr`, `-addr`, `/`), as
    /// `recent_mt_proc_write`: Ok(Some(n)) is write's return, an error its errno; None when no
    /// rule of the table names the list.
    fn recent_write(&self, _name: &str, _data: &[u8]) -> Result<Option<usize>, BackendError> {
        Ok(None)
    }
}

/// Makes backends for newly instantiated tables.
pub trait Backends: Sync {
    /// Instantiates `table` (the kernel's initial table) in namespace `ns`.
    fn create(&self, ns: &Namespace, table: &Table) -> Result<Box<dyn TableBackend>, BackendError>;
    /// Tables that a previous daemon left running, to take over.
    fn adopt(&self) -> Vec<(NsId, TableKey, Table, Box<dyn TableBackend>)> {
        Vec::new()
    }
    /// Removes what backends of namespace `ns` left behind (pins, links) once its tables are
    /// dropped.
    fn flush(&self, ns: NsId);
    /// Removes what backends left behind for namespaces other than `keep` (after a flush of
    /// every namespace: pins of namespaces this daemon does not know).
    fn flush_orphans(&self, keep: &[NsId]);
}

/// One table of one namespace.
#[derive(Debug)]
pub struct TableState {
    /// The accepted ruleset.
    pub table: Table,
    /// What runs it.
    pub backend: Box<dyn TableBackend>,
}

impl TableState {
    /// Switches to `table`; returns the old counters. On error nothing changed.
    pub fn replace(&mut self, table: Table, blob: &[u8]) -> Result<Vec<XtCounters>, Refusal> {
        let old = self.backend.replace(&table, blob)?;
        self.table = table;
        Ok(old)
    }

    /// Adds counters (SET_ADD_COUNTERS).
    pub fn add_counters(&mut self, add: &[XtCounters]) -> Result<(), Refusal> {
        Ok(self.backend.add_counters(add)?)
    }
}

/// The tables of one network namespace.
#[derive(Debug)]
pub struct Namespace {
    /// Which namespace.
    pub id: NsId,
    /// An fd of the namespace, to create links from a thread that entered it.
    pub fd: Option<std::os::fd::OwnedFd>,
    /// Its tables, IPv4's then IPv6's, by name.
    pub tables: BTreeMap<TableKey, TableState>,
}

impl Namespace {
    /// A namespace with no tables yet.
    pub fn new(id: NsId) -> Self {
        Self {
            id,
            fd: None,
            tables: BTreeMap::new(),
        }
    }

    /// The table `key`, instantiated on first access as the kernel does; ENOENT for a table
    /// bpfilter does not have.
    pub fn instantiate(
        &mut self,
        key: &TableKey,
        backends: &dyn Backends,
    ) -> Result<&mut TableState, Refusal> {
        if !self.tables.contains_key(key) {
            let table = initial_table(key)?;
            let backend = backends.create(self, &table)?;
            tracing::info!(netns = %self.id, table = %key, "table instantiated");
            self.tables
                .insert(key.clone(), TableState { table, backend });
        }
        self.tables
            .get_mut(key)
            .ok_or_else(|| Refusal::new(libc::ENOENT, format!("no table {key}")))
    }

    /// The names of its tables of `family`.
    pub fn names(&self, family: Family) -> Vec<&str> {
        self.tables
            .keys()
            .filter(|k| k.family == family)
            .map(|k| k.name.as_str())
            .collect()
    }
}

/// The table the kernel creates for `key` on first access (ENOENT for a table bpfilter does
/// not have).
pub fn initial_table(key: &TableKey) -> Result<Table, Refusal> {
    Ok(Table::initial_for(key.family, &key.name)?)
}
