"""The tokens a shard stores, as part of the shard contract (docs/FORMAT.md): rank-value encoding over
CSR blocks (``rank_value``), the checks that counts are raw integer counts (``counts``), gene ids cleaned
and mapped onto a vocabulary (``genes``), the gene medians file (``medians``), and tokenizing a matrix
of cells in process exactly as a build does (``cells``).

``ingest`` writes shards with these; ``training`` tokenizes a user's AnnData with them (no shard set,
no subprocess). Nothing here imports torch.
"""

from .cells import TokenizedCells, kept_rows, tokenize_counts
from .counts import INT_TOL, first_problem, is_integral, round_noise
from .genes import clean_gene_ids, column_tokens
from .medians import read_gene_medians, token_medians
from .rank_value import TokenMap, rank_value_encode, rows_with_tokens

__all__ = [
    "INT_TOL",
    "TokenMap",
    "TokenizedCells",
    "clean_gene_ids",
    "column_tokens",
    "first_problem",
    "is_integral",
    "kept_rows",
    "rank_value_encode",
    "read_gene_medians",
    "round_noise",
    "rows_with_tokens",
    "token_medians",
    "tokenize_counts",
]
