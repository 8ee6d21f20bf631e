namespace Sequencer.Client;

/// <summary>The node answered with an error body (or no node answered).</summary>
public sealed class SequencerApiException : Exception
{
    /// <summary>Creates the exception.</summary>
    public SequencerApiException(int status, string code, string message, TimeSpan? retryAfter = null)
        : base($"{status} {code}: {message}")
    {
        Status = status;
        Code = code;
        RetryAfter = retryAfter;
    }

    /// <summary>Creates the exception for a transport failure (status 0).</summary>
    public SequencerApiException(string message, Exception inner)
        : base(message, inner)
    {
        Code = "unreachable";
    }

    /// <summary>Creates the exception.</summary>
    public SequencerApiException()
    {
        Code = "unknown";
    }

    /// <summary>Creates the exception.</summary>
    public SequencerApiException(string message)
        : base(message)
    {
        Code = "unknown";
    }

    /// <summary>The HTTP status, or 0 when the node could not be reached.</summary>
    public int Status { get; }

    /// <summary>The <c>error</c> code of the body.</summary>
    public string Code { get; }

    /// <summary>The node's <c>Retry-After</c>, when it gave one.</summary>
    public TimeSpan? RetryAfter { get; }

    /// <summary>For a 409 <c>nonce_used</c> (ethereum mode): the tx that holds the nonce, when the node named it.</summary>
    public string? ConflictsWith { get; init; }

    /// <summary>
    /// True when the submit may or may not have taken effect (timeout, lost connection, leader change): retry it,
    /// the cluster deduplicates by tx hash.
    /// </summary>
    public bool IsIndeterminate => Status == 0 || Code is "outcome_unknown" || Status == 504;

    /// <summary>True when the request certainly had no effect and may be retried (overload, no leader yet).</summary>
    public bool IsRetryable => Status is 429 or 503 || IsIndeterminate;
}
