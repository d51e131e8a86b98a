"""Coverage for analysts: snapshots of what the index holds per area and vendor, privacy-preserving search
outcomes, the tables built from both, their exports, and the map and chart drawn from them."""
