/** The console's frame: login gate, menu, user and roles, logout, and the pages' routes. */
import { useEffect, useState } from "react";
import { Link, Route, Routes, useLocation } from "react-router-dom";
import { Alert, App as AntApp, Button, ConfigProvider, Layout, Menu, Result, Space, Spin, Tag, Typography } from "antd";
import { ApiError, get, rememberCsrfToken } from "./lib/api";
import { loadPermissions } from "./lib/permissions";
import type { Me } from "./lib/types";
import { SessionContext, type Session } from "./session";
import { Dashboard } from "./pages/Dashboard";
import { Scripts } from "./pages/Scripts";
import { ScriptPage } from "./pages/ScriptPage";
import { Runs } from "./pages/Runs";
import { RunPage } from "./pages/RunPage";
import { Hosts } from "./pages/Hosts";
import { Access } from "./pages/Access";
import { Logs } from "./pages/Logs";

const PAGES = [
  { key: "/", label: "Dashboard" },
  { key: "/scripts", label: "Scripts" },
  { key: "/runs", label: "Runs" },
  { key: "/logs", label: "Logs" },
  { key: "/hosts", label: "Hosts" },
  { key: "/access", label: "Access", admin: true },
];

function LoggedOut() {
  const next = encodeURIComponent(window.location.pathname + window.location.search);
  return (
    <Result
      title="SMS — Script Management System"
      subTitle="Log in with your company account to manage and run scripts."
      extra={
        <Space>
          <Button type="primary" href={`/auth/login?next=${next}`}>Log in</Button>
          <Button href="/auth/register">Register</Button>
        </Space>
      }
    />
  );
}

/** Logging out is a form post carrying the session's CSRF token (then Keycloak ends its session too). */
function LogoutButton({ token }: { token?: string }) {
  return (
    <form method="post" action="/auth/logout" style={{ display: "inline" }}>
      <input type="hidden" name="csrf_token" value={token ?? ""} />
      <Button htmlType="submit" size="small">Log out</Button>
    </form>
  );
}

export function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [state, setState] = useState<"loading" | "anonymous" | "ready" | "error">("loading");
  const [error, setError] = useState("");
  const location = useLocation();

  useEffect(() => {
    (async () => {
      try {
        const me = await get<Me>("/auth/me");
        rememberCsrfToken(me.csrf_token);
        setSession({ me, permissions: await loadPermissions(me.roles) });
        setState("ready");
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) setState("anonymous");
        else {
          setError(String((e as Error).message));
          setState("error");
        }
      }
    })();
  }, []);

  if (state === "loading") return <Spin fullscreen tip="Loading" />;
  if (state === "anonymous") return <LoggedOut />;
  if (state === "error" || !session) return <Alert type="error" showIcon message="The gateway did not answer" description={error} />;

  const admin = session.permissions.can["access.manage"];
  const selected = PAGES.filter((p) => p.key !== "/" && location.pathname.startsWith(p.key)).map((p) => p.key);
  return (
    <ConfigProvider theme={{ token: { colorPrimary: "#1f5fbf" } }}>
      <AntApp>
        <SessionContext.Provider value={session}>
          <Layout style={{ minHeight: "100vh" }}>
            <Layout.Header style={{ display: "flex", alignItems: "center", gap: 16 }}>
              <Typography.Text strong style={{ color: "#fff", whiteSpace: "nowrap" }}>SMS console</Typography.Text>
              <Menu
                theme="dark"
                mode="horizontal"
                aria-label="Pages"
                selectedKeys={selected.length ? selected : ["/"]}
                style={{ flex: 1, minWidth: 0 }}
                items={PAGES.filter((p) => !p.admin || admin).map((p) => ({ key: p.key, label: <Link to={p.key}>{p.label}</Link> }))}
              />
              <a href="/prefect/" style={{ color: "#cfd8e6" }}>Prefect UI</a>
              <Space data-testid="who" style={{ color: "#fff" }}>
                <span>{session.me.username}</span>
                {session.me.roles.filter((r) => r.startsWith("sms-")).map((r) => <Tag key={r}>{r}</Tag>)}
                <LogoutButton token={session.me.csrf_token} />
              </Space>
            </Layout.Header>
            <Layout.Content style={{ padding: 24 }}>
              <Routes>
                <Route path="/" element={<Dashboard />} />
                <Route path="/scripts" element={<Scripts />} />
                <Route path="/scripts/:name" element={<ScriptPage />} />
                <Route path="/runs" element={<Runs />} />
                <Route path="/runs/:id" element={<RunPage />} />
                <Route path="/logs" element={<Logs />} />
                <Route path="/hosts" element={<Hosts />} />
                <Route path="/access" element={<Access />} />
                <Route path="*" element={<Result status="404" title="No such page" extra={<Link to="/">Dashboard</Link>} />} />
              </Routes>
            </Layout.Content>
          </Layout>
        </SessionContext.Provider>
      </AntApp>
    </ConfigProvider>
  );
}
