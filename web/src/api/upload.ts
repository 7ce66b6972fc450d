/** Uploading a document with XMLHttpRequest: fetch reports no upload progress, XHR does. */

import type { ApiClient } from "./client";
import { errorFromResponse, NetworkError, SignedOutError } from "./problem";

export interface UploadProgress {
  loaded: number;
  total: number;
}

interface XhrAnswer {
  status: number;
  body: string;
  headers: Headers;
}

function send(url: string, token: string, file: File, onProgress: (p: UploadProgress) => void, signal?: AbortSignal): Promise<XhrAnswer> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.onprogress = (event) => {
      onProgress({ loaded: event.loaded, total: event.lengthComputable ? event.total : file.size });
    };
    xhr.onload = () => {
      const headers = new Headers();
      for (const name of ["Content-Type", "Retry-After", "X-Request-ID", "Location"]) {
        const value = xhr.getResponseHeader(name);
        if (value) headers.set(name, value);
      }
      resolve({ status: xhr.status, body: xhr.responseText, headers });
    };
    xhr.onerror = () => reject(new NetworkError());
    xhr.onabort = () => reject(new DOMException("The upload was cancelled.", "AbortError"));
    signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

/** Uploads the file as multipart/form-data (field `file`), reporting the bytes sent; refreshes
 * the session and sends again once on a 401. Resolves to the created document's JSON. */
export async function uploadDocument<T>(
  client: ApiClient,
  file: File,
  onProgress: (p: UploadProgress) => void,
  signal?: AbortSignal,
): Promise<T> {
  const url = client.url("/api/v1/documents");
  let token = await client.accessToken();
  let answer = await send(url, token, file, onProgress, signal);
  if (answer.status === 401) {
    const fresh = await client.session.refresh(token);
    if (!fresh) throw new SignedOutError();
    token = fresh;
    onProgress({ loaded: 0, total: file.size });
    answer = await send(url, token, file, onProgress, signal);
  }
  if (answer.status === 0) throw new NetworkError();
  const resp = new Response(answer.body || null, { status: answer.status, headers: answer.headers });
  if (!resp.ok) throw await errorFromResponse(resp);
  return (await resp.json()) as T;
}
