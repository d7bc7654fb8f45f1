/**
 * Runs `work` (a long operation the agent runs for us: a backup, a copy) with Ctrl-C turned into a
 * request to the agent to stop it (`cancel`): the operation's stream then ends with CANCELLED, exit 130.
 * A second Ctrl-C leaves at once, as the default would. The handler is removed however `work` ends.
 */
export async function cancelOnInterrupt<T>(cancel: () => Promise<unknown>, work: () => Promise<T>): Promise<T> {
  let interrupted = false;
  const onSigint = () => {
    if (interrupted) {
      process.off('SIGINT', onSigint);
      process.kill(process.pid, 'SIGINT');
      return;
    }
    interrupted = true;
    void cancel().catch(() => {});
  };
  process.on('SIGINT', onSigint);
  try {
    return await work();
  } finally {
    process.off('SIGINT', onSigint);
  }
}
