/**
 * Public surface of the testbed library: namespaces, veth paths shaped with HTB, MPTCP
 * endpoints, exec/spawn in a namespace, guaranteed teardown. Imports nothing from src/.
 */
export {
  createTestbed,
  Testbed,
  PATH_NAMES,
  SETUP_STEPS,
  listNamespaces,
  namespacePids,
  killNamespacePids,
  killNamespacePidsSync,
  type TestbedOptions,
  type TestbedHosts,
  type ClientHost,
  type ProxyHost,
  type ServerHost,
  type HostName,
  type PathName,
  type SetupStep,
  type ExecOptions,
} from './testbed.js';
export { TestbedProcess, type SpawnOptions, type LineMatch, type ProcessExit, type WaitForLineOptions } from './spawned-process.js';
export { runCommand, runCommandSync, TestbedCommandError, formatArgv, type CommandResult, type RunCommandOptions } from './run-command.js';
export { testbedSkipReason } from './skip-reason.js';
export { parseSsTcp, splitEndpoint, type SsTcpSocket } from './ss-parse.js';
export { generatePrefix, validatePrefix, namespaceName, NAMESPACE_PATTERN, PREFIX_PATTERN, HOST_ROLES } from './naming.js';
export { registeredTeardownCount } from './process-cleanup.js';
