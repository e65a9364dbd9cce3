/** Who is logged in and what they may do, for every page. */
import { createContext, useContext } from "react";
import type { Permissions } from "./lib/permissions";
import type { Me } from "./lib/types";

export interface Session {
  me: Me;
  permissions: Permissions;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("useSession outside a logged-in console");
  return session;
}
