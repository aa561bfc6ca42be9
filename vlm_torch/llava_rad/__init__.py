"""LLaVA-Rad ported onto current transformers: Llama language model, BiomedCLIP-CXR vision tower, 2-layer GELU
projector, and a converter from the published checkpoint layout."""
