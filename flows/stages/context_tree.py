"""Stage 2, the context tree: the kept documents' domains, subdomains and functionalities clustered by embedding."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from flows.batch_tasks import build_tree
from flows.scheduler import on_runner
from flows.stages.run_context import Carried, RunContext, StageResult, workers_watched
from schemas.frames import TreeNodesFrame
from schemas.records import MinedDocument, StageStats, TreeNode
from tasks.context_tree.building import tree_nested, tree_shape
from tasks.storage.writers import write_json, write_validated

STAGE = "context_tree"


def build_context_tree(run: RunContext, kept: list[MinedDocument]) -> StageResult[TreeNode]:
    """The tree's nodes; a kept document no node holds counts as rejected here. ``report["shape"]``: its size."""
    config = run.config
    t0 = time.perf_counter()
    nodes = on_runner(build_tree, run.scope, kept, config.embedding_model, config.tree_merge_threshold,
                      config.leaf_merge_threshold)
    in_tree = {d for n in nodes for d in n.doc_ids}
    stats = StageStats(items_in=len(kept), accepted=len(in_tree), rejected=len(kept) - len(in_tree),
                       wall_time_s=round(time.perf_counter() - t0, 3))
    write_validated(nodes, TreeNode, TreeNodesFrame, f"{run.run_url}/tables/context_tree_nodes.parquet",
                    "context_tree_nodes")
    write_json(tree_nested(nodes), f"{run.run_url}/context_tree.json")
    return StageResult(records=nodes, stats={STAGE: stats},
                       files=["tables/context_tree_nodes.parquet", "context_tree.json"],
                       report={"shape": tree_shape(nodes)})


@flow(name="context-tree", validate_parameters=False, persist_result=False)
def context_tree_stage(run: RunContext, kept: Carried[MinedDocument]) -> StageResult[TreeNode]:
    with workers_watched(run.watchdog):
        result = build_context_tree(run, list(kept.items))
    get_run_logger().info("context tree: %s", result.report["shape"])
    return result
