"""PostgreSQL and SQLite: sqlglot's tokenizer for the dialect finds where statements end.

The server parses the string itself when it runs it, so the split must see strings, quoted
names, dollar quotes and comments as the server does: sqlglot's tokenizer for the dialect
does, and a string it cannot tokenize is not run at all.  Each statement's kind is read from
sqlglot's tree by the classifier.

The vocabulary lists what reaches past the data: PostgreSQL's server-side file, program,
large-object, settings and cross-server functions, SQLite's extension loading and file
functions.  They are denied wherever they appear, whatever the policy says.
"""

from __future__ import annotations

from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import TokenType

from guard_kernel.analysis.sql.dialects.base import Piece, Vocabulary

__all__ = ["POSTGRES", "SQLITE", "ServerDialect"]

_FILES = "reads or writes files outside the database (on the server's machine)"
_OTHER = "connects to another server, unseen by the guard"
_SETTINGS = "changes the session's or server's settings"
_SERVER = "controls the server or other sessions"
_SQL = "runs SQL held in a string, which the guard cannot see"

_POSTGRES = Vocabulary(
    read_functions=frozenset({
        "generate_subscripts", "exploding_generate_series", "jsonb_each", "jsonb_each_text", "json_each_text", "json_array_elements",
        "jsonb_array_elements", "json_array_elements_text", "jsonb_array_elements_text", "json_to_recordset",
        "jsonb_to_recordset", "json_populate_recordset", "jsonb_populate_recordset", "json_object_keys",
        "jsonb_object_keys", "regexp_matches", "regexp_split_to_table", "string_to_table", "pg_get_keywords",
    }),
    denied_functions={
        "pg_read_file": _FILES, "pg_read_binary_file": _FILES, "pg_ls_dir": _FILES, "pg_stat_file": _FILES,
        "pg_ls_logdir": _FILES, "pg_ls_waldir": _FILES, "pg_ls_tmpdir": _FILES, "pg_ls_archive_statusdir": _FILES,
        "set_config": _SETTINGS, "pg_reload_conf": _SERVER, "pg_rotate_logfile": _SERVER, "pg_promote": _SERVER,
        "pg_terminate_backend": _SERVER, "pg_cancel_backend": _SERVER, "pg_switch_wal": _SERVER,
        "pg_create_restore_point": _SERVER, "pg_notify": _SERVER, "pg_logical_emit_message": _SERVER,
        "nextval": "advances a sequence (a write)", "setval": "sets a sequence (a write)",
        "query_to_xml": _SQL, "query_to_xml_and_xmlschema": _SQL, "query_to_xmlschema": _SQL,
        "cursor_to_xml": _SQL, "database_to_xml": "dumps every table", "schema_to_xml": "dumps every table",
        "database_to_xml_and_xmlschema": "dumps every table", "schema_to_xml_and_xmlschema": "dumps every table",
        "table_to_xml": "dumps a whole table", "table_to_xml_and_xmlschema": "dumps a whole table",
    },
    denied_prefixes=(("lo_", "large objects reach files on the server"), ("dblink", _OTHER),
                     ("pg_file_", _FILES), ("pg_replication_", _SERVER), ("pg_import_", _SERVER)),
)

_SQLITE = Vocabulary(
    read_functions=frozenset({"json_each", "json_tree", "pragma_table_info", "pragma_table_xinfo",
                              "pragma_index_list", "pragma_index_info", "pragma_foreign_key_list",
                              "pragma_database_list", "pragma_table_list"}),
    denied_functions={"load_extension": "loads native code into the database engine", "readfile": _FILES,
                      "writefile": _FILES, "edit": "starts an editor", "fts3_tokenizer": "can load native code"},
    read_pragmas=frozenset({
        "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
        "foreign_key_list", "database_list", "collation_list", "function_list", "module_list", "pragma_list",
        "compile_options", "encoding", "page_count", "page_size", "freelist_count", "schema_version",
        "user_version", "application_id", "data_version", "foreign_keys", "journal_mode", "query_only",
        "read_uncommitted", "busy_timeout", "cache_size", "synchronous", "temp_store", "auto_vacuum", "locking_mode",
        "recursive_triggers", "automatic_index", "mmap_size", "max_page_count", "defer_foreign_keys",
        "integrity_check", "quick_check", "foreign_key_check",
    }),
)


class ServerDialect:
    """A dialect whose statements sqlglot splits and types (PostgreSQL, SQLite)."""

    def __init__(self, name: str, vocabulary: Vocabulary) -> None:
        self.name = name
        self.vocabulary = vocabulary
        self._dialect = Dialect.get_or_raise(name)

    def split(self, text: str) -> list[Piece] | str:
        try:
            tokens = self._dialect.tokenize(text)
        except SqlglotError as e:
            return f"the {self.name} tokenizer cannot read it: {(str(e).splitlines() or ['?'])[0][:200]}"
        out: list[Piece] = []
        start = 0
        seen = False  # a token other than `;` since the last split: empty statements are dropped
        for tok in tokens:
            if tok.token_type is TokenType.SEMICOLON:
                if seen:
                    out.append(Piece(text[start:tok.end + 1]))
                start = tok.end + 1
                seen = False
            else:
                seen = True
        if seen:
            out.append(Piece(text[start:]))
        elif out:  # blanks and comments after the last `;` stay with the last statement
            out[-1] = Piece(out[-1].text + text[start:])
        return out

    def __repr__(self) -> str:
        return f"<dialect {self.name}>"


POSTGRES = ServerDialect("postgres", _POSTGRES)
SQLITE = ServerDialect("sqlite", _SQLITE)
