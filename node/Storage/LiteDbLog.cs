using System.Reflection;
using LiteDB;
using LiteDB.Engine;

namespace Sequencer.Node.Storage;

/// <summary>
/// A LiteDB database whose log file this project makes durable itself: one fsync per transaction, when the transaction
/// is done, instead of LiteDB's own.
/// </summary>
/// <remarks>
/// <para>LiteDB 5.0.20 writes a committed transaction's pages to its log file (<c>NAME-log.db</c>) on a writer thread
/// of its own, after <c>Commit</c> has returned, and fsyncs that file every time the thread finds its queue empty.
/// Under the persister's load that was many fsyncs per transaction (measured on a 3-node devnet at one closed-loop
/// client: 250 fsyncs a second of <c>store-log.db</c> per node without signing and 560 with it, against about 35
/// transactions a second), each one a disk flush beside the Raft log's; and none of them was waited for, so a
/// transaction was not yet durable when <c>Commit</c> returned.</para>
/// <para>Here LiteDB gets the log as a stream (<see cref="EngineSettings.LogStream"/>) whose <c>Flush</c> does not
/// reach the disk, and <see cref="Sync"/>, which each writer calls right after its commit, waits for LiteDB's writer
/// queue to drain and then fsyncs the file once. When <see cref="Sync"/> returns, the transaction is on disk. The data
/// file stays LiteDB's own, fsynced by its checkpoint before the log is cut.</para>
/// <para>Waiting for the writer queue takes LiteDB's internals (<c>LiteDatabase._engine</c>, <c>LiteEngine._disk</c>,
/// <c>DiskService.Queue</c>, the queue's <c>_queueIsEmpty</c> and <c>_exception</c>), resolved when the database opens:
/// a LiteDB without them is refused with a message naming the version this code was written for, never run without the
/// durability.</para>
/// <para>The writer is started at open, on its empty queue (the queue's <c>_task</c>, <c>_queueSync</c> and
/// <c>ExecuteQueue</c>): LiteDB starts it at the first write and keeps as its handle the task that ends when the writer
/// first waits for work. When that first write fails (a full disk), the writer closes the engine, which waits for that
/// handle, its own: it waits for good, and <see cref="Sync"/> with it (the fault never gets recorded). Started here, the
/// handle is done before any write, and a failed first write is an <see cref="IOException"/> like any other.</para>
/// </remarks>
public sealed class LiteDbLog : IDisposable
{
    /// <summary>The LiteDB version whose internals <see cref="Sync"/> relies on.</summary>
    public const string ExpectedLiteDbVersion = "5.0.20";

    private readonly LogFileStream log;
    private readonly Action waitForWriter;

    private LiteDbLog(LiteDatabase database, LogFileStream log, Action waitForWriter)
    {
        Database = database;
        this.log = log;
        this.waitForWriter = waitForWriter;
    }

    /// <summary>The database.</summary>
    public LiteDatabase Database { get; }

    /// <summary>How many times <see cref="Sync"/> reached the disk (tests read it).</summary>
    public long Syncs => log.SyncCount;

    /// <summary>Opens (or creates) the database at <paramref name="path"/> with its log at LiteDB's own name for it.</summary>
    /// <exception cref="IOException">The files cannot be opened.</exception>
    /// <exception cref="InvalidOperationException">This LiteDB lacks the internals <see cref="Sync"/> needs.</exception>
    public static LiteDbLog Open(string path) => Open(path, failWrite: null);

    /// <summary>As <see cref="Open(string)"/>; <paramref name="failWrite"/> (tests) makes a write to the log fail as a full disk does.</summary>
    internal static LiteDbLog Open(string path, Func<bool>? failWrite)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = Path.GetFullPath(path);
        var logPath = Path.Combine(Path.GetDirectoryName(full)!, Path.GetFileNameWithoutExtension(full) + "-log" + Path.GetExtension(full));
        var log = new LogFileStream(logPath, failWrite);
        LiteEngine? engine = null;
        try
        {
            engine = new LiteEngine(new EngineSettings { Filename = full, LogStream = log });
            var database = new LiteDatabase(engine);
            var queue = WriterQueue(database);
            StartWriter(queue);
            return new LiteDbLog(database, log, ResolveWriterWait(queue));
        }
        catch
        {
            engine?.Dispose();
            log.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Makes every transaction committed so far durable: waits until LiteDB's writer thread has written their pages to
    /// the log, then fsyncs it. Call it after each commit, holding the lock that orders the database's writers.
    /// </summary>
    /// <exception cref="IOException">The disk failed, or LiteDB's writer thread did (it stops for good then).</exception>
    public void Sync()
    {
        waitForWriter();
        log.SyncToDisk();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        // LiteDB checkpoints the log into the data file (and fsyncs that) when it closes; the stream goes with it.
        Database.Dispose();
        log.Dispose();
    }

    private const BindingFlags Instance = BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public;

    private static object WriterQueue(LiteDatabase database)
    {
        var engine = typeof(LiteDatabase).GetField("_engine", Instance)?.GetValue(database);
        var disk = engine?.GetType().GetField("_disk", Instance)?.GetValue(engine);
        var lazy = disk?.GetType().GetProperty("Queue", Instance)?.GetValue(disk);
        return lazy?.GetType().GetProperty("Value")?.GetValue(lazy) ?? throw MissingInternals();
    }

    private static InvalidOperationException MissingInternals() => new(
        $"LiteDB {typeof(LiteDatabase).Assembly.GetName().Version} does not have the writer queue this store waits for before it " +
        $"fsyncs (written for LiteDB {ExpectedLiteDbVersion}): refusing to run without durable commits");

    // As LiteDB's EnqueuePage starts it (under the same lock), on the empty queue: the writer writes nothing, marks the
    // queue empty, flushes the log stream (LogFileStream.Flush does nothing) and waits for work, which ends the task
    // LiteDB keeps as its handle. The writer's first real write then never finds that handle running (see remarks).
    private static void StartWriter(object queue)
    {
        var type = queue.GetType();
        var handle = type.GetField("_task", Instance);
        var gate = type.GetField("_queueSync", Instance)?.GetValue(queue);
        var execute = type.GetMethod("ExecuteQueue", Instance, Type.EmptyTypes);
        if (handle is null || handle.FieldType != typeof(Task) || gate is null || execute is null || execute.ReturnType != typeof(Task))
            throw MissingInternals();
        Task started;
        lock (gate)
        {
            if (handle.GetValue(queue) is Task running)
            {
                started = running;
            }
            else
            {
                started = Task.Factory.StartNew(() => (Task)execute.Invoke(queue, null)!, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
                handle.SetValue(queue, started);
            }
        }

        started.Wait();
    }

    private static Action ResolveWriterWait(object queue)
    {
        var empty = queue.GetType().GetField("_queueIsEmpty", Instance)?.GetValue(queue) as ManualResetEventSlim;
        var failure = queue.GetType().GetField("_exception", Instance);
        if (empty is null || failure is null || failure.FieldType != typeof(Exception))
            throw MissingInternals();

        // DiskWriterQueue.Wait() would wait for good once the writer thread has failed (it records the exception and
        // ends without marking the queue empty): wait in steps and look for that failure between them.
        return () =>
        {
            while (!empty.Wait(WriterPoll))
                ThrowIfFailed();
            ThrowIfFailed();
        };

        void ThrowIfFailed()
        {
            if (failure.GetValue(queue) is Exception failed)
                throw new IOException($"LiteDB's log writer failed: {failed.Message}", failed);
        }
    }

    private static readonly TimeSpan WriterPoll = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// The log file as LiteDB sees it: unbuffered reads and writes at the position LiteDB sets, and a <c>Flush</c> that
    /// leaves the data with the OS (LiteDB calls it whenever its writer queue drains). LiteDB's own wrapper locks this
    /// object around each positioned read and write; <see cref="SyncToDisk"/> takes the same lock.
    /// </summary>
    private sealed class LogFileStream : Stream
    {
        private readonly FileStream file;
        private readonly Func<bool>? failWrite;
        private long syncCount;

        public LogFileStream(string path, Func<bool>? failWrite)
        {
            this.failWrite = failWrite;
            var options = new FileStreamOptions { Mode = FileMode.OpenOrCreate, Access = FileAccess.ReadWrite, Share = FileShare.Read, BufferSize = 0 };
            if (!OperatingSystem.IsWindows())
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            file = new FileStream(path, options);
        }

        public override bool CanRead => true;

        public override bool CanSeek => true;

        public override bool CanWrite => true;

        public override long Length
        {
            get
            {
                lock (this)
                    return file.Length;
            }
        }

        // Position, Read, Seek and Write are called by LiteDB's wrapper inside its lock on this object.
        public override long Position
        {
            get => file.Position;
            set => file.Position = value;
        }

        // LiteDB's writer thread calls this each time its queue drains: the bytes are with the OS already (unbuffered).
        public override void Flush()
        {
        }

        public void SyncToDisk()
        {
            lock (this)
                file.Flush(flushToDisk: true);
            Interlocked.Increment(ref syncCount);
        }

        public long SyncCount => Interlocked.Read(ref syncCount);

        public override int Read(byte[] buffer, int offset, int count) => file.Read(buffer, offset, count);

        public override long Seek(long offset, SeekOrigin origin) => file.Seek(offset, origin);

        public override void SetLength(long value)
        {
            lock (this)
                file.SetLength(value);
        }

        public override void Write(byte[] buffer, int offset, int count)
        {
            if (failWrite?.Invoke() == true)
                throw new IOException("No space left on device (a test's fault)");
            file.Write(buffer, offset, count);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                file.Dispose();
            base.Dispose(disposing);
        }
    }
}
