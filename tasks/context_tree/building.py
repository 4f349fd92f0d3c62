"""The API context tree: domain -> sub-domains -> functionality leaves, merged across documents.

Names are normalised (case, punctuation, plural 's') so that the same node from two documents merges;
near-synonyms merge by embedding similarity; each node keeps the ids of the documents it came from.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


Embed = Callable[[Sequence[str]], np.ndarray]
MERGE_CHECK = "tree_merge_v1"


@dataclass
class _Node:
    key: str
    name: str
    functionality: bool
    doc_ids: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    children: dict[tuple[str, bool], _Node] = field(default_factory=dict)

    def add_doc(self, doc_id: str) -> None:
        if doc_id not in self.doc_ids:
            self.doc_ids.append(doc_id)

    def absorb(self, other: _Node) -> None:
        """Merge a near-synonymous sibling into this node: documents, names and children."""
        for doc_id in other.doc_ids:
            self.add_doc(doc_id)
        for alias in [other.name, *other.aliases]:
            if normalise_name(alias) != self.key and alias not in self.aliases:
                self.aliases.append(alias)
        for child_key, child in other.children.items():
            if child_key in self.children:
                self.children[child_key].absorb(child)
            else:
                self.children[child_key] = child

    def leaf_names(self, limit: int = 12) -> list[str]:
        names: list[str] = []
        stack = list(self.children.values())
        while stack and len(names) < limit:
            node = stack.pop(0)
            if node.functionality:
                names.append(node.name)
            stack.extend(node.children.values())
        return names

    def profile(self) -> str:
        """What the merge embedding sees: a category with the functionalities under it; a leaf alone."""
        if self.functionality:
            return self.name
        return f"{self.name}: {'; '.join(self.leaf_names())}"


def _merge_siblings(groups: list[dict[tuple[str, bool], _Node]], embed: Embed, category_threshold: float,
                    leaf_threshold: float) -> None:
    """Greedy clustering within each sibling group, biggest node first: a node joins the first kept
    sibling of its kind whose profile embedding is at least the threshold, else it is kept."""
    ordered = [sorted(g.values(), key=lambda n: (-len(n.doc_ids), n.key)) for g in groups]
    texts = [node.profile() for nodes in ordered for node in nodes]
    if len(texts) < 2:
        return
    vectors = iter(embed(texts))
    for group, nodes in zip(groups, ordered, strict=True):
        kept: list[tuple[_Node, np.ndarray]] = []
        for node in nodes:
            vector = next(vectors)
            threshold = leaf_threshold if node.functionality else category_threshold
            best, best_sim = None, threshold
            for other, other_vec in kept:
                if other.functionality == node.functionality:
                    sim = float(np.dot(vector, other_vec))
                    if sim >= best_sim:
                        best, best_sim = other, sim
            if best is None:
                kept.append((node, vector))
            else:
                best.absorb(node)
                del group[(node.key, node.functionality)]


def build_tree(mined: list[MinedDocument], embed: Embed | None = None, category_threshold: float = 0.75,
               leaf_threshold: float = 0.85) -> list[TreeNode]:
    """Merge the accepted extractions into one tree; returns nodes parents-first.

    Names merge by normalisation (case, punctuation, plurals). With ``embed`` (all-MiniLM-L6-v2 in the
    flow), near-synonymous siblings merge too: domains and sub-domains ("Weather" / "Meteorology") when
    the embeddings of their name plus the functionalities under them reach ``category_threshold``,
    functionality leaves when their names reach ``leaf_threshold``. A merged node keeps the other
    names as ``aliases`` and the union of the documents.
    """
    roots: dict[tuple[str, bool], _Node] = {}
    for doc in mined:
        if not doc.accepted or not doc.domain:
            continue
        level, parent_key = roots, ""
        node: _Node | None = None
        for name in [doc.domain, *doc.subdomains]:
            key = normalise_name(name)
            if not key or key == parent_key:
                continue
            node = level.setdefault((key, False), _Node(key, name, False))
            node.add_doc(doc.doc_id)
            level, parent_key = node.children, key
        if node is None:
            continue
        for functionality in doc.functionalities:
            key = normalise_name(functionality)
            if key:
                level.setdefault((key, True), _Node(key, functionality, True)).add_doc(doc.doc_id)

    if embed is not None:
        frontier = [roots]
        while frontier:
            _merge_siblings(frontier, embed, category_threshold, leaf_threshold)
            frontier = [n.children for g in frontier for n in g.values() if n.children]

    out: list[TreeNode] = []
    queue: list[tuple[tuple[str, ...], _Node]] = [((n.key,), n) for n in roots.values()]
    while queue:
        path, node = queue.pop(0)
        out.append(TreeNode(node_id=_node_id(path), parent_id=_node_id(path[:-1]) if len(path) > 1 else None,
                            name=node.name, level=len(path) - 1, is_functionality=node.functionality,
                            doc_ids=node.doc_ids, aliases=node.aliases))
        queue.extend(((*path, child.key), child) for child in node.children.values())
    return out


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
                "doc_ids": node.doc_ids, "aliases": node.aliases,
                "children": [build(c) for c in children[node.node_id]]}

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
