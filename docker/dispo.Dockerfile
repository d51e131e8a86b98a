# The Dispo API and scheduler image.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY dispo dispo
COPY rpps_import rpps_import
COPY indexer indexer
COPY mappings mappings
COPY api api
COPY editor_sandbox editor_sandbox
COPY bench bench
COPY data data
RUN pip install --no-cache-dir -c requirements.lock . && useradd --system dispo
USER dispo
EXPOSE 8000
CMD ["dispo", "serve", "--host", "0.0.0.0", "--port", "8000"]
