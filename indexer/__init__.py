"""Search backends behind one interface (Elasticsearch, embedded SQLite), index lifecycle and bulk writes."""
