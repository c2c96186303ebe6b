"""ByteDance Seed-OSS: `<seed:think>...</seed:think>`."""

from mlx_server.parsing.reasoning.base import MarkerReasoningParser


class SeedOssReasoningParser(MarkerReasoningParser):
    name = "seed_oss"
    start = "<seed:think>"
    end = "</seed:think>"
