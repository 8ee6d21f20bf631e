using System.Text.Json;
using System.Text.RegularExpressions;

namespace Sequencer.IntegrationTests;

/// <summary>
/// The part of JSON Schema (2020-12, as OpenAPI 3.1 uses it) that the node's document uses: $ref, oneOf, type (one or
/// several), properties, required, additionalProperties, items, enum, pattern, minimum and maximum. Enough to check
/// that what a node answers fits what the document promises.
/// </summary>
internal static class OpenApiSchema
{
    /// <summary>Adds a problem for each way <paramref name="value"/> does not fit <paramref name="schema"/>.</summary>
    public static void Validate(JsonElement value, JsonElement schema, JsonElement document, string at, List<string> problems)
    {
        if (schema.TryGetProperty("$ref", out var reference))
        {
            Validate(value, Resolve(document, reference.GetString()!), document, at, problems);
            return;
        }

        if (schema.TryGetProperty("oneOf", out var oneOf))
        {
            var fits = oneOf.EnumerateArray().Count(option =>
            {
                var inner = new List<string>();
                Validate(value, option, document, at, inner);
                return inner.Count == 0;
            });
            if (fits != 1)
                problems.Add($"{at}: fits {fits} of the oneOf options, not exactly one: {Short(value)}");
            return;
        }

        if (schema.TryGetProperty("type", out var type))
        {
            var types = type.ValueKind == JsonValueKind.Array ? type.EnumerateArray().Select(t => t.GetString()!).ToList() : [type.GetString()!];
            if (!types.Any(t => Is(value, t)))
            {
                problems.Add($"{at}: expected {string.Join(" or ", types)}, got {value.ValueKind}: {Short(value)}");
                return;
            }
        }

        if (schema.TryGetProperty("enum", out var choices) && !choices.EnumerateArray().Any(c => c.GetRawText() == value.GetRawText()))
            problems.Add($"{at}: {Short(value)} is not one of {choices.GetRawText()}");
        if (value.ValueKind == JsonValueKind.String && schema.TryGetProperty("pattern", out var pattern) && !Regex.IsMatch(value.GetString()!, pattern.GetString()!))
            problems.Add($"{at}: \"{value.GetString()}\" does not match {pattern.GetString()}");
        if (value.ValueKind == JsonValueKind.Number)
        {
            if (schema.TryGetProperty("minimum", out var minimum) && value.GetDecimal() < minimum.GetDecimal())
                problems.Add($"{at}: {value} is below {minimum}");
            if (schema.TryGetProperty("maximum", out var maximum) && value.GetDecimal() > maximum.GetDecimal())
                problems.Add($"{at}: {value} is above {maximum}");
        }

        if (value.ValueKind == JsonValueKind.Object)
        {
            var properties = schema.TryGetProperty("properties", out var p) ? p : default;
            if (schema.TryGetProperty("required", out var required))
            {
                foreach (var name in required.EnumerateArray().Select(r => r.GetString()!))
                {
                    if (!value.TryGetProperty(name, out _))
                        problems.Add($"{at}: the required \"{name}\" is missing");
                }
            }

            foreach (var property in value.EnumerateObject())
            {
                if (properties.ValueKind == JsonValueKind.Object && properties.TryGetProperty(property.Name, out var inner))
                    Validate(property.Value, inner, document, $"{at}.{property.Name}", problems);
                else if (schema.TryGetProperty("additionalProperties", out var additional) && additional.ValueKind == JsonValueKind.Object)
                    Validate(property.Value, additional, document, $"{at}.{property.Name}", problems);
                else if (properties.ValueKind == JsonValueKind.Object && !schema.TryGetProperty("additionalProperties", out _))
                    problems.Add($"{at}: \"{property.Name}\" is not documented");
            }
        }

        if (value.ValueKind == JsonValueKind.Array && schema.TryGetProperty("items", out var items))
        {
            var i = 0;
            foreach (var item in value.EnumerateArray())
                Validate(item, items, document, $"{at}[{i++}]", problems);
        }
    }

    /// <summary>Adds a problem for each $ref under <paramref name="element"/> that does not resolve.</summary>
    public static void CheckReferences(JsonElement element, JsonElement document, string at, List<string> problems)
    {
        if (element.ValueKind == JsonValueKind.Object)
        {
            foreach (var property in element.EnumerateObject())
            {
                if (property.Name == "$ref")
                {
                    try
                    {
                        Resolve(document, property.Value.GetString()!);
                    }
                    catch (KeyNotFoundException)
                    {
                        problems.Add($"{at}: $ref {property.Value.GetString()} does not resolve");
                    }
                }
                else
                {
                    CheckReferences(property.Value, document, $"{at}/{property.Name}", problems);
                }
            }
        }
        else if (element.ValueKind == JsonValueKind.Array)
        {
            foreach (var item in element.EnumerateArray())
                CheckReferences(item, document, at, problems);
        }
    }

    private static JsonElement Resolve(JsonElement document, string reference)
    {
        if (!reference.StartsWith("#/", StringComparison.Ordinal))
            throw new KeyNotFoundException(reference);
        var target = document;
        foreach (var part in reference[2..].Split('/'))
            target = target.TryGetProperty(part, out var next) ? next : throw new KeyNotFoundException(reference);
        return target;
    }

    private static bool Is(JsonElement value, string type) => type switch
    {
        "object" => value.ValueKind == JsonValueKind.Object,
        "array" => value.ValueKind == JsonValueKind.Array,
        "string" => value.ValueKind == JsonValueKind.String,
        "integer" => value.ValueKind == JsonValueKind.Number && value.TryGetDecimal(out var d) && decimal.Truncate(d) == d,
        "number" => value.ValueKind == JsonValueKind.Number,
        "boolean" => value.ValueKind is JsonValueKind.True or JsonValueKind.False,
        "null" => value.ValueKind == JsonValueKind.Null,
        _ => false,
    };

    private static string Short(JsonElement value)
    {
        var text = value.GetRawText();
        return text.Length > 120 ? text[..120] + "…" : text;
    }
}
