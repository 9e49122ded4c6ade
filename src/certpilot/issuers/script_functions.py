"""Which optional functions a script defines, read from its source without running it."""

from __future__ import annotations

import ast
import functools

RENEWAL_INFO_FUNCTION = "certificate_renewal_info"


@functools.lru_cache(maxsize=64)
def defines_renewal_info(source: str) -> bool:
    """The script defines `certificate_renewal_info` at its top level (`def`, or a name
    bound to it). A source that does not parse defines nothing."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == RENEWAL_INFO_FUNCTION:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == RENEWAL_INFO_FUNCTION for t in targets):
                return True
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == RENEWAL_INFO_FUNCTION
                                                    for a in node.names):
            return True
    return False
