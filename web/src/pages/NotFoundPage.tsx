import { usePageHeading } from "../hooks";
import { Link } from "../router";

export function NotFoundPage() {
  const heading = usePageHeading("Page not found");
  return (
    <main id="main" className="main">
      <h1 ref={heading} tabIndex={-1}>
        Page not found
      </h1>
      <p>
        There is nothing at this address. Go to your <Link to="/documents">documents</Link>.
      </p>
    </main>
  );
}
