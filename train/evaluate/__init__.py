"""Evaluation protocols: 1:1 verification (pairs, .bin), IJB-B/C templates, k-shot identification."""
