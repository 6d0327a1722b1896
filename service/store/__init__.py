"""Every SQL statement Herald runs, grouped by the table it is about.

Functions take a connection first and never open their own transaction: the caller decides what is
atomic. Statements are module-level constants with `$n` parameters only. Rows become Structs from
`service.model` before they leave this package.
"""
