"""Machine-readable model cards of an artifact: model_card.json (CHAI Applied Model Card sections, contract
model_card), a MONAI-bundle-style configs/metadata.json, and the change history across artifacts.

Layer: above artifacts and contracts, below evaluation (which writes a card beside every report)."""
