import { useEffect, useState, type ReactNode } from "react";
import { session } from "./api";
import { StatusBanner } from "./components/StatusBanner";
import { AccountPage } from "./pages/AccountPage";
import { AnalysisPage } from "./pages/AnalysisPage";
import { ChatPage } from "./pages/ChatPage";
import { DocumentPage } from "./pages/DocumentPage";
import { DocumentsPage } from "./pages/DocumentsPage";
import { KeysPage } from "./pages/KeysPage";
import { NotFoundPage } from "./pages/NotFoundPage";
import { SignInPage, SignUpPage } from "./pages/SignInPage";
import { UsagePage } from "./pages/UsagePage";
import { safeNext } from "./next";
import { Link, match, useRouter } from "./router";
import { endSession } from "./signout";

type AuthState = "unknown" | "in" | "out";

const PUBLIC = ["/signin", "/signup"];
const NAV = [
  { to: "/documents", label: "Documents" },
  { to: "/chat", label: "Chat" },
  { to: "/usage", label: "Usage" },
  { to: "/keys", label: "API keys" },
  { to: "/account", label: "Account" },
];

export function App() {
  const { path, search, navigate } = useRouter();
  const [auth, setAuth] = useState<AuthState>(session.signedIn ? "in" : "unknown");
  const isPublic = PUBLIC.includes(path.replace(/\/+$/, "") || "/");

  useEffect(() => {
    const unsubscribe = session.subscribe((signedIn) => setAuth(signedIn ? "in" : "out"));
    // A page load has no access token: the refresh cookie, if any, gives one.
    if (!session.signedIn) {
      session.refresh().then(
        (token) => setAuth(token ? "in" : "out"),
        () => setAuth("out"),
      );
    }
    return unsubscribe;
  }, []);

  useEffect(() => {
    if (auth === "unknown") return;
    if (path === "/" || path === "") {
      navigate(auth === "in" ? "/documents" : "/signin", { replace: true });
    } else if (auth === "out" && !isPublic) {
      // Keep where the person was: sign-in brings them back (their drafts are in sessionStorage).
      navigate(`/signin?next=${encodeURIComponent(path + search)}`, { replace: true });
    } else if (auth === "in" && isPublic) {
      navigate(safeNext(search), { replace: true });
    }
  }, [auth, path, search, isPublic, navigate]);

  const signOut = async () => {
    await endSession();
    navigate("/signin", { replace: true });
  };

  let page: ReactNode;
  if (auth === "unknown" || (auth === "out" && !isPublic) || (auth === "in" && isPublic) || path === "/") {
    page = (
      <main id="main" className="main">
        <p className="loading" role="status">
          Loading…
        </p>
      </main>
    );
  } else {
    page = route(path);
  }

  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="header">
        <Link to="/" className="brand">
          UltrAI
        </Link>
        {auth === "in" && (
          <>
            <nav aria-label="Main" className="nav">
              <ul>
                {NAV.map((item) => (
                  <li key={item.to}>
                    <Link to={item.to} aria-current={path === item.to || path.startsWith(item.to + "/") ? "page" : undefined}>
                      {item.label}
                    </Link>
                  </li>
                ))}
              </ul>
            </nav>
            <button type="button" className="secondary small" onClick={signOut}>
              Sign out
            </button>
          </>
        )}
      </header>
      <StatusBanner />
      {page}
    </>
  );
}

function route(path: string): ReactNode {
  let params: Record<string, string> | null;
  if (match("/signin", path)) return <SignInPage />;
  if (match("/signup", path)) return <SignUpPage />;
  if (match("/documents", path)) return <DocumentsPage />;
  if ((params = match("/documents/:id", path))) return <DocumentPage key={params.id} id={params.id} />;
  if ((params = match("/documents/:id/analyses/:aid", path)))
    return <AnalysisPage key={params.aid} documentId={params.id} analysisId={params.aid} />;
  if (match("/chat", path)) return <ChatPage />;
  if (match("/usage", path)) return <UsagePage />;
  if (match("/keys", path)) return <KeysPage />;
  if (match("/account", path)) return <AccountPage />;
  return <NotFoundPage />;
}
