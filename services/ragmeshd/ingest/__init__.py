"""`ragmesh ingest`'s sync client: folders on disk kept in step with a collection in the mesh.

A client of the mesh (the layer of bench/ and evaluation/): it walks the paths given, hashes
each file, asks the mesh which documents it holds under those paths (ListDocuments), extracts
and splits only the new and changed files (ragmeshd.documents) and sends them in batches
through Envoy, and with --prune deletes the documents whose files are gone.

- `walk`: the files under the paths given (recursive, --glob, --exclude), each with a document
  id made of its root's label and its path relative to that root.
- `plan`: which files to send, which are unchanged and which documents to prune.
"""
