"""What the embedded store refuses to run. Pure: it reads ClickHouse's own parse of a statement.

The embedded store is chdb, which is clickhouse-local: no users, no grants, and every table
function, engine and file path open to whoever can send it a query. A ClickHouse server limits
these through access control; here the statement's syntax tree (`EXPLAIN AST`, ClickHouse's own
parser, so no SQL is re-parsed by hand) is checked against allow-lists before it runs:

* the statement must be of a kind on the allow-list (queries, inserts, DDL of tables and views,
  SET, SHOW, DESCRIBE, EXPLAIN...): ATTACH ... FROM a path, BACKUP and RESTORE (which write and
  read files), users and grants, and CREATE DICTIONARY (whose sources reach files, processes and
  URLs) are not;
* table functions (`FROM f(...)`, `INSERT INTO FUNCTION f(...)`) and table and database engines
  must be on the allow-lists below: the ones that reach only this store's own data. `file`,
  `url`, `executable`, `s3`, `hdfs`, `remote`, `input`, `mysql`, `postgresql`, ... are not;
* the scalar functions that read files (`file`, `catboostEvaluate`) are refused;
* `INTO OUTFILE`, `FROM INFILE`, `CREATE DICTIONARY` (sources reach files, processes and URLs),
  and settings or formats that name files or remote schema registries are refused;
* read-only requests (GET, or `readonly` set) also refuse `KILL` and `SYSTEM`.
"""

from __future__ import annotations

import re

__all__ = ["ALLOWED_ENGINES", "ALLOWED_TABLE_FUNCTIONS", "refusal", "setting_refusal", "statement_kind"]

ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        "numbers", "numbers_mt", "zeros", "zeros_mt", "generaterandom", "generate_series",
        "generateseries", "values", "view", "viewifpermitted", "merge", "null", "format", "loop",
    }
)
ALLOWED_ENGINES = frozenset(
    {
        # tables
        "mergetree", "replacingmergetree", "summingmergetree", "aggregatingmergetree",
        "collapsingmergetree", "versionedcollapsingmergetree", "coalescingmergetree",
        "graphitemergetree", "memory", "null", "log", "tinylog", "stripelog", "buffer", "set",
        "join", "merge", "generaterandom",
        # databases
        "atomic", "ordinary", "lazy",
    }
)
_STATEMENTS = frozenset(
    {
        "SelectWithUnionQuery", "InsertQuery", "CreateQuery", "DropQuery", "UndropQuery", "AlterQuery",
        "DeleteQuery", "UpdateQuery", "Rename", "OptimizeQuery", "TruncateQuery", "DetachQuery",
        "ShowTables", "ShowColumns", "ShowIndexes", "ShowEngineQuery", "ShowFunctions",
        "ShowCreateTableQuery", "ShowCreateDatabaseQuery", "ShowCreateViewQuery", "ShowProcesslistQuery",
        "ExistsTableQuery", "ExistsDatabaseQuery", "ExistsViewQuery", "DescribeQuery", "Explain",
        "Set", "UseQuery", "CheckQuery", "KillQueryQuery", "SYSTEM",
    }
)
_READ_WRITE_ONLY = frozenset({"KillQueryQuery", "SYSTEM"})
_FILE_READING_FUNCTIONS = frozenset({"file", "catboostevaluate"})
# Formats that read a schema or template from a file, or fetch one from a registry.
_REFUSED_FORMATS = frozenset(
    {"template", "templateignorespaces", "protobuf", "protobufsingle", "protobuflist", "capnproto",
     "avroconfluent"}
)
# Settings that name a file to read or write, or a registry to fetch from. In SQL only these
# names count (a column may well be called `log_path`); a setting passed as a URL parameter is
# also refused for any name ending in _path or _file.
_FILE_SETTING = re.compile(
    r"format_schema|format_template|schema_registry|output_format_schema|default_(?:temporary_)?table_engine",
    re.IGNORECASE,
)
_FILE_SETTING_NAME = re.compile(_FILE_SETTING.pattern + r"|_path$|_file$", re.IGNORECASE)
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+`?(\w+)", re.IGNORECASE)
# In ClickHouse's own formatting of a CREATE statement (comments gone, spacing canonical).
_ENGINE_CLAUSE = re.compile(r"\bENGINE = `?(\w+)")

# One node per line, indented by depth: "      Function file (children 1)".
_NODE = re.compile(r"^( *)(\S+(?: query| definition)?)(?: +(\S+))?")


def statement_kind(ast: str) -> str:
    """The kind of statement an `EXPLAIN AST` output describes: SelectWithUnionQuery, CreateQuery..."""
    return ast.split(None, 1)[0] if ast.strip() else ""


def refusal(ast: str, statement: str, *, readonly: bool, formatted: str = "") -> str | None:
    """Why the statement whose `EXPLAIN AST` output is `ast` may not run here, or None.
    `formatted` is ClickHouse's formatQuerySingleLine of a CREATE statement (for its engines)."""
    lines = ast.splitlines()
    kind = statement_kind(ast)
    if kind not in _STATEMENTS:
        return f"{kind or 'this statement'} is not allowed by the embedded store"
    if readonly and kind in _READ_WRITE_ONLY:
        return f"{kind} is not allowed in readonly mode"
    if kind == "CreateQuery" and any(line.strip().startswith("Dictionary definition") for line in lines):
        return "CREATE DICTIONARY is not allowed: dictionary sources reach files, processes and URLs"
    for engine in _ENGINE_CLAUSE.findall(formatted):
        if engine.lower() not in ALLOWED_ENGINES:
            return f"engine {engine} is not allowed: it reaches outside the store"
    parents: list[tuple[int, str]] = []  # (indent, node kind) of the enclosing nodes
    for line in lines:
        match = _NODE.match(line)
        if match is None:
            continue
        indent, kind, name = len(match.group(1)), match.group(2), (match.group(3) or "")
        while parents and parents[-1][0] >= indent:
            parents.pop()
        parent = parents[-1][1] if parents else ""
        lowered = name.lower()
        if kind == "Function":
            if parent in ("TableExpression", "InsertQuery") and lowered not in ALLOWED_TABLE_FUNCTIONS:
                return f"table function {name}() is not allowed: it reaches outside the store"
            if lowered in _FILE_READING_FUNCTIONS:
                return f"function {name}() is not allowed: it reads files"
        elif kind == "Literal" and parent in ("SelectWithUnionQuery", "InsertQuery"):
            # A bare literal under the query itself is a file name: INTO OUTFILE or FROM INFILE.
            return "INTO OUTFILE and FROM INFILE are not allowed: they reach the store's file system"
        parents.append((indent, kind))
    for fmt in _FORMAT_CLAUSE.findall(statement):
        if fmt.lower() in _REFUSED_FORMATS:
            return f"format {fmt} is not allowed: it reads a schema from a file or a registry"
    if _FILE_SETTING.search(statement):
        return "settings that name files or schema registries are not allowed"
    return None


def setting_refusal(name: str, value: str) -> str | None:
    """Why a setting passed with the request (a URL parameter) may not be applied, or None."""
    if _FILE_SETTING_NAME.search(name):
        return f"setting {name} is not allowed: it names a file or a schema registry"
    if name.lower() in ("default_format", "output_format") and value.lower() in _REFUSED_FORMATS:
        return f"format {value} is not allowed"
    return None
