"""Requests that reached outside the embedded store through its port before it had a guard: every
one must be refused (tests/storage/test_embedded_security.py, bench/chaos.py)."""

from __future__ import annotations

PROBES = [
    "SELECT * FROM file('/etc/shadow', 'LineAsString')",
    "SELECT file('/etc/passwd')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
    "INSERT INTO FUNCTION file('/tmp/llmwatch-probe', 'TSV') SELECT 1",
    "SELECT 'owned' INTO OUTFILE '/tmp/llmwatch-probe' TRUNCATE",
    "SELECT * FROM executable('id', 'TSV', 'a String')",
    "SELECT * FROM s3('http://127.0.0.1:1/b/k', 'TSV')",
    "SELECT * FROM hdfs('hdfs://127.0.0.1:1/x', 'TSV')",
    "SELECT * FROM remote('127.0.0.1:1', system.one)",
    "SELECT * FROM input('a String')",
    "SELECT * FROM mysql('127.0.0.1:1', 'd', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:1', 'd', 't', 'u', 'p')",
    "SELECT 1 WHERE 1 IN (SELECT * FROM file('/etc/passwd', 'LineAsString'))",
    "CREATE TABLE default.leak (a String) ENGINE = File(LineAsString, '/etc/passwd')",
    "CREATE TABLE default.leak (a String) ENGINE /* hidden */ = URL('http://127.0.0.1:1/', LineAsString)",
    "CREATE DATABASE leak ENGINE = PostgreSQL('127.0.0.1:1', 'd', 'u', 'p')",
    "CREATE DICTIONARY default.leak (a String) PRIMARY KEY a SOURCE(FILE(path '/etc/passwd' format 'TSV')) "
    "LAYOUT(FLAT()) LIFETIME(0)",
    "ATTACH TABLE default.leak FROM '/etc' (a String) ENGINE = MergeTree ORDER BY a",
    "BACKUP TABLE system.one TO File('/tmp/llmwatch-probe')",
    "INSERT INTO default.t FROM INFILE '/etc/passwd' FORMAT LineAsString",
    "SELECT 1 SETTINGS format_template_resultset = '/etc/shadow' FORMAT Template",
]
