"""The API context tree: domain -> sub-domains -> functionality leaves, merged across documents.

Names are normalised (case, punctuation, plural 's') so that the same node from two documents merges;
each node keeps the ids of the documents it came from.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from typing import Any

from schemas.records import MinedDocument, TreeNode

_NON_WORD = re.compile(r"[^a-z0-9]+")


def singular(word: str) -> str:
    """A light singulariser: categories -> category, alerts -> alert; status, news, analysis stay."""
    if len(word) <= 3 or word.endswith(("ss", "us", "is", "ws")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    return word[:-1] if word.endswith("s") else word


def normalise_name(name: str) -> str:
    words = [w for w in _NON_WORD.sub(" ", name.lower()).split() if w not in {"and", "the", "a", "an", "of"}]
    return " ".join(singular(w) for w in words)


def _node_id(path: tuple[str, ...]) -> str:
    return hashlib.sha1("/".join(path).encode()).hexdigest()[:12]


def build_tree(mined: list[MinedDocument]) -> list[TreeNode]:
    """Merge the accepted extractions into one tree; returns nodes parents-first."""
    nodes: dict[tuple[str, ...], TreeNode] = {}

    def add(path: tuple[str, ...], name: str, functionality: bool, doc_id: str) -> None:
        node = nodes.get(path)
        if node is None:
            parent = _node_id(path[:-1]) if len(path) > 1 else None
            node = nodes[path] = TreeNode(node_id=_node_id(path), parent_id=parent, name=name,
                                          level=len(path) - 1, is_functionality=functionality, doc_ids=[])
        if doc_id not in node.doc_ids:
            node.doc_ids.append(doc_id)

    for doc in mined:
        if not doc.accepted or not doc.domain:
            continue
        path: tuple[str, ...] = ()
        for name in [doc.domain, *doc.subdomains]:
            key = normalise_name(name)
            if not key or (path and key == path[-1]):
                continue
            path = (*path, key)
            add(path, name, False, doc.doc_id)
        for functionality in doc.functionalities:
            key = normalise_name(functionality)
            if key:
                add((*path, key), functionality, True, doc.doc_id)
    return sorted(nodes.values(), key=lambda n: n.level)


def domain_of(node: TreeNode, by_id: dict[str, TreeNode]) -> TreeNode:
    while node.parent_id is not None:
        node = by_id[node.parent_id]
    return node


def tree_nested(nodes: list[TreeNode]) -> list[dict[str, Any]]:
    children: dict[str | None, list[TreeNode]] = defaultdict(list)
    for node in nodes:
        children[node.parent_id].append(node)

    def build(node: TreeNode) -> dict[str, Any]:
        return {"id": node.node_id, "name": node.name, "functionality": node.is_functionality,
                "doc_ids": node.doc_ids, "children": [build(c) for c in children[node.node_id]]}

    return [build(root) for root in children[None]]


def tree_shape(nodes: list[TreeNode]) -> dict[str, Any]:
    by_id = {n.node_id: n for n in nodes}
    leaves: dict[str, int] = defaultdict(int)
    for node in nodes:
        if node.is_functionality:
            leaves[domain_of(node, by_id).name] += 1
    return {
        "domains": sum(1 for n in nodes if n.parent_id is None),
        "nodes": len(nodes),
        "leaves": sum(leaves.values()),
        "depth": max((n.level for n in nodes), default=-1) + 1,
        "leaves_per_domain": dict(sorted(leaves.items(), key=lambda kv: -kv[1])),
    }
