import { useCallback, useEffect, useRef, useState, type DragEvent } from "react";
import { api } from "../api";
import { ApiError } from "../api/problem";
import type { DocumentCreated, DocumentOut, DocumentPage } from "../api/types";
import { uploadDocument, type UploadProgress } from "../api/upload";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { ErrorMessage } from "../components/ErrorMessage";
import { formatBytes, formatDate } from "../format";
import { usePageHeading } from "../hooks";
import { Link, useRouter } from "../router";

const PAGE_SIZE = 20;
/** The documents service's default MAX_UPLOAD_BYTES; the server's 413 says so too when it differs. */
const MAX_UPLOAD_BYTES = 25 * 1024 * 1024;
const ACCEPT = ".pdf,.docx,.txt,.md,.markdown,.html,.htm,.csv,.json,application/pdf,text/*,application/json";

export function DocumentsPage() {
  const heading = usePageHeading("Documents");
  const { navigate } = useRouter();
  // The cursors of the pages before this one (paging back), and this page's.
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [page, setPage] = useState<DocumentPage | null>(null);
  const [listError, setListError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const cursor = cursors[cursors.length - 1];

  const load = useCallback(async () => {
    setLoading(true);
    setListError(null);
    try {
      const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (cursor) query.set("cursor", cursor);
      setPage(await api.json<DocumentPage>(`/api/v1/documents?${query}`));
    } catch (err) {
      setListError(err);
    } finally {
      setLoading(false);
    }
  }, [cursor]);

  useEffect(() => {
    void load();
  }, [load]);

  // Upload
  const [progress, setProgress] = useState<UploadProgress | null>(null);
  const [uploading, setUploading] = useState<string | null>(null);
  const [uploadError, setUploadError] = useState<unknown>(null);
  const [uploaded, setUploaded] = useState<DocumentCreated | null>(null);
  const [dragging, setDragging] = useState(false);
  const abort = useRef<AbortController | null>(null);
  const input = useRef<HTMLInputElement>(null);

  useEffect(() => () => abort.current?.abort(), []);

  const upload = async (file: File) => {
    setUploadError(null);
    setUploaded(null);
    if (file.size > MAX_UPLOAD_BYTES) {
      setUploadError(
        new ApiError(413, { detail: `${file.name} is ${formatBytes(file.size)}; the largest upload is ${formatBytes(MAX_UPLOAD_BYTES)}.` }, null, null),
      );
      return;
    }
    if (file.size === 0) {
      setUploadError(new ApiError(400, { detail: `${file.name} is empty.` }, null, null));
      return;
    }
    const controller = new AbortController();
    abort.current = controller;
    setUploading(file.name);
    setProgress({ loaded: 0, total: file.size });
    try {
      const doc = await uploadDocument<DocumentCreated>(api, file, setProgress, controller.signal);
      setUploaded(doc);
      setCursors([null]);
      if (cursor === null) void load();
    } catch (err) {
      if (!(err instanceof DOMException && err.name === "AbortError")) setUploadError(err);
    } finally {
      setUploading(null);
      setProgress(null);
      abort.current = null;
      if (input.current) input.current.value = "";
    }
  };

  const onDrop = (event: DragEvent) => {
    event.preventDefault();
    setDragging(false);
    const file = event.dataTransfer.files[0];
    if (file && !uploading) void upload(file);
  };

  // Delete
  const [deleting, setDeleting] = useState<DocumentOut | null>(null);
  const [deleteBusy, setDeleteBusy] = useState(false);
  const [deleteError, setDeleteError] = useState<unknown>(null);
  const [status, setStatus] = useState("");

  const confirmDelete = async () => {
    if (!deleting) return;
    setDeleteBusy(true);
    setDeleteError(null);
    try {
      await api.request(`/api/v1/documents/${encodeURIComponent(deleting.id)}`, { method: "DELETE" });
      setStatus(`Deleted ${deleting.name}.`);
      setDeleting(null);
      void load();
    } catch (err) {
      setDeleteError(err);
      setDeleting(null);
    } finally {
      setDeleteBusy(false);
    }
  };

  const percent = progress && progress.total ? Math.round((progress.loaded / progress.total) * 100) : 0;

  return (
    <main id="main" className="main">
      <h1 ref={heading} tabIndex={-1}>
        Documents
      </h1>

      <section aria-labelledby="upload-heading" className="card">
        <h2 id="upload-heading">Upload</h2>
        <div
          className={`dropzone${dragging ? " dragging" : ""}`}
          onDragOver={(e) => {
            e.preventDefault();
            setDragging(true);
          }}
          onDragLeave={() => setDragging(false)}
          onDrop={onDrop}
        >
          <p>Drop a file here, or choose one.</p>
          <label htmlFor="upload-input">Upload a document</label>
          <input
            id="upload-input"
            ref={input}
            className="file-input"
            type="file"
            accept={ACCEPT}
            disabled={uploading !== null}
            onChange={(e) => {
              const file = e.target.files?.[0];
              if (file) void upload(file);
            }}
          />
          <p className="hint">PDF, DOCX, plain text, Markdown, HTML, CSV or JSON, up to {formatBytes(MAX_UPLOAD_BYTES)}.</p>
        </div>
        {uploading !== null && progress && (
          <div className="upload-progress">
            <p id="upload-progress-text">
              Uploading {uploading}: {formatBytes(progress.loaded)} of {formatBytes(progress.total)} ({percent}%)
            </p>
            <progress aria-label="Upload progress" aria-describedby="upload-progress-text" max={progress.total || 1} value={progress.loaded} />
            <button type="button" className="secondary small" onClick={() => abort.current?.abort()}>
              Cancel upload
            </button>
          </div>
        )}
        {uploadError !== null && <ErrorMessage error={uploadError} />}
        {uploaded && (
          <p role="status" className="success">
            {uploaded.duplicate ? "You had uploaded this file already: " : "Uploaded "}
            <Link to={`/documents/${uploaded.id}`}>{uploaded.name}</Link> ({formatNumber(uploaded.char_count)} characters,{" "}
            {uploaded.chunk_count} chunks).
          </p>
        )}
      </section>

      <section aria-labelledby="list-heading">
        <h2 id="list-heading">Your documents</h2>
        <p role="status" className="visually-hidden">
          {status}
        </p>
        {listError !== null && <ErrorMessage error={listError} onRetry={load} />}
        {deleteError !== null && <ErrorMessage error={deleteError} />}
        {loading && !page && <p>Loading…</p>}
        {page && page.items.length === 0 && cursors.length === 1 && <p>No documents yet. Upload one above.</p>}
        {page && page.items.length > 0 && (
          <ul className="doc-list">
            {page.items.map((doc) => (
              <li key={doc.id} className="doc-item">
                <div>
                  <Link to={`/documents/${doc.id}`} className="doc-name">
                    {doc.name}
                  </Link>
                  <p className="meta">
                    {doc.kind.toUpperCase()} · {formatBytes(doc.size_bytes)} · {formatNumber(doc.token_count)} tokens · {formatDate(doc.created_at)}
                  </p>
                </div>
                <div className="doc-actions">
                  <button type="button" className="secondary small" onClick={() => navigate(`/documents/${doc.id}`)} aria-label={`Analyse ${doc.name}`}>
                    Analyse
                  </button>
                  <button
                    type="button"
                    className="danger small"
                    onClick={() => setDeleting(doc)}
                    aria-describedby={`doc-${doc.id}`}
                  >
                    Delete
                  </button>
                  <span id={`doc-${doc.id}`} className="visually-hidden">
                    {doc.name}
                  </span>
                </div>
              </li>
            ))}
          </ul>
        )}
        {page && (cursors.length > 1 || page.next_cursor) && (
          <nav aria-label="Pages of documents" className="pager">
            <button type="button" className="secondary" disabled={cursors.length <= 1 || loading} onClick={() => setCursors(cursors.slice(0, -1))}>
              Previous page
            </button>
            <span>Page {cursors.length}</span>
            <button
              type="button"
              className="secondary"
              disabled={!page.next_cursor || loading}
              onClick={() => page.next_cursor && setCursors([...cursors, page.next_cursor])}
            >
              Next page
            </button>
          </nav>
        )}
      </section>

      {deleting && (
        <ConfirmDialog
          title={`Delete ${deleting.name}?`}
          confirmLabel="Delete document"
          busy={deleteBusy}
          onConfirm={confirmDelete}
          onCancel={() => setDeleting(null)}
        >
          <p>The document, its extracted text and its analyses are deleted for good.</p>
        </ConfirmDialog>
      )}
    </main>
  );
}

function formatNumber(n: number): string {
  return n.toLocaleString("en");
}
